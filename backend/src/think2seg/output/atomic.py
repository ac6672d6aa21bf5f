"""Outputs appear whole or not at all: write beside the target, then rename over it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from think2seg.errors import OutputError, OutputExistsError


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool, suffixes: tuple[str, ...]) -> Path:
    """Validate an output path before any work is done; returns it as an absolute Path.

    Refuses a wrong extension, an existing file without ``overwrite``, a missing or read-only folder.
    """
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise OutputError(f"{target} is a folder: give a file name such as {target / ('result' + suffixes[0])}")
    if target.suffix.lower() not in suffixes:
        raise OutputError(f"{target.name}: the output must end in {' or '.join(suffixes)}")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists: pass --overwrite to replace it, or choose another name")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"the folder {folder} does not exist: create it first or choose another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {folder} (permission denied): choose an output path in a writable folder")
    return target


@contextmanager
def atomic_output(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target`` in one rename.

    The file is flushed to disk before the rename, so writers may skip their own per-step syncs.
    On any error the temporary file is removed and ``target`` is left as it was.
    """
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists: pass --overwrite to replace it, or choose another name")
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {target.parent} ({exc.strerror}): choose a writable folder") from exc
    try:
        temporary = workdir / target.name
        yield temporary
        fsync_path(temporary)
        replace_file(temporary, target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def replace_file(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` over ``target`` in one step; OutputError (what to do) if the OS refuses."""
    try:
        os.replace(temporary, target)
    except OSError as exc:  # on Windows, a file another program (QGIS) has open cannot be replaced
        raise OutputError(
            f"cannot replace {target} ({exc.strerror or exc}): close it in other programs (QGIS, a GIS viewer) "
            "or choose another output path; nothing was written"
        ) from exc


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a renamed output is complete after a crash."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:  # folders cannot be opened on Windows; their entries are durable there anyway
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
