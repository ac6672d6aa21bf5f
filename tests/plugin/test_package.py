"""`make package`: the zip QGIS installs from, checked by loading the plugin from its contents."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile

from qgis_helpers import ROOT


def test_zip_holds_the_plugin_and_loads_from_its_contents(qgis_iface, tmp_path):
    target = tmp_path / "think2seg_qgis.zip"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package_plugin.py"), str(target)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert target.stat().st_size < 25 * 2**20
    names = zipfile.ZipFile(target).namelist()
    for required in ("metadata.txt", "LICENSE", "__init__.py", "icons/think2seg.svg", "processing/provider.py"):
        assert f"think2seg_qgis/{required}" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    metadata = zipfile.ZipFile(target).read("think2seg_qgis/metadata.txt").decode()
    assert "qgisMinimumVersion=3.22" in metadata and "qgisMaximumVersion=4.99" in metadata

    zipfile.ZipFile(target).extractall(tmp_path / "plugins")
    folder = tmp_path / "plugins" / "think2seg_qgis"
    spec = importlib.util.spec_from_file_location(
        "think2seg_qgis_from_zip", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    plugin = module.classFactory(qgis_iface)
    plugin.initGui()
    assert plugin.dock is not None
    plugin.unload()
