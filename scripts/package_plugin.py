"""Build dist/think2seg_qgis.zip for QGIS's "Install from ZIP" (standard library only).

The zip holds one folder, think2seg_qgis/, with the plugin's code, its icon, the top-level
metadata.txt, the licence and the README (how to install the backend); caches and tests are left out. Refuses to build a zip over 25 MB.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "think2seg_qgis"
LIMIT_BYTES = 25 * 2**20
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def files() -> list[tuple[Path, str]]:
    found = [
        (path, f"{PLUGIN}/{path.relative_to(ROOT / PLUGIN).as_posix()}")
        for path in sorted((ROOT / PLUGIN).rglob("*"))
        if path.is_file() and not SKIP_PARTS & set(path.parts) and path.suffix not in SKIP_SUFFIXES
    ]
    found += [(ROOT / name, f"{PLUGIN}/{name}") for name in ("metadata.txt", "LICENSE", "README.md")]
    return found


def build(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name in files():
            archive.write(path, name)
    size = partial.stat().st_size
    if size > LIMIT_BYTES:
        partial.unlink()
        raise SystemExit(f"the plugin zip would be {size / 2**20:.1f} MB, over the 25 MB limit")
    partial.replace(target)
    return target


if __name__ == "__main__":
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist" / f"{PLUGIN}.zip")
    print(f"built {out} ({out.stat().st_size / 1024:.0f} KiB)")
