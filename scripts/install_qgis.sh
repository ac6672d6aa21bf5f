#!/usr/bin/env bash
# Install QGIS and its Python bindings from Debian's packages (needs root or sudo).
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "QGIS is missing: installing qgis and python3-qgis from Debian's packages"
$sudo apt-get install -y --no-install-recommends qgis python3-qgis || {
  $sudo apt-get update -qq
  $sudo apt-get install -y --no-install-recommends qgis python3-qgis
}
