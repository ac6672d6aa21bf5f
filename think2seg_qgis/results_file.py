"""Where the current project's results live: one GeoPackage per project.

A saved project keeps them beside it, in ``<project name>_think2seg.gpkg``. An unsaved project gets
a temporary file of its own (``think2seg-unsaved-<id>.gpkg`` in the system's temporary folder),
so a new project never shows an earlier one's polygons. When such a project is saved, its results
are copied beside it and its layers re-pointed there; when it is closed unsaved, the user is
offered to keep them (see :meth:`ResultsFile.keep_as`). Copies use SQLite's backup API, which is
consistent even while QGIS has the file open.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from contextlib import closing
from pathlib import Path

from qgis.core import QgsProject, QgsVectorLayer

from .errors import ResultsError

SUFFIX = "_think2seg.gpkg"


class ResultsFile:
    """The results GeoPackage of ``project``: beside it once saved, else a temporary file."""

    def __init__(self, project: QgsProject, temp_dir: Path | None = None) -> None:
        self.project = project
        self._temp_dir = temp_dir or Path(tempfile.gettempdir())
        self._temporary = self._new_temporary()

    @property
    def path(self) -> Path:
        if self.is_temporary:
            return self._temporary
        project_file = Path(self.project.fileName())
        return project_file.with_name(project_file.stem + SUFFIX)

    @property
    def is_temporary(self) -> bool:
        return not self.project.fileName()

    @property
    def temporary_path(self) -> Path:
        """This project's temporary file (it exists once an unsaved project has results)."""
        return self._temporary

    def new_project(self) -> Path | None:
        """Start the file of a new project; returns the previous temporary file when it holds results."""
        previous = self._temporary
        self._temporary = self._new_temporary()
        return previous if previous.exists() else None

    def keep_as(self, source: Path, target: Path) -> None:
        """Copy the results file ``source`` to ``target`` (refusing to overwrite); raises ResultsError."""
        if target.exists():
            raise ResultsError(f"{target} exists already: choose another file name")
        copy_geopackage(source, target)

    def adopt(self, layers: list[QgsVectorLayer]) -> Path | None:
        """After the first save of a project: copy its temporary results beside it and re-point
        ``layers`` there. Returns the new file, or None when there was nothing to move."""
        source = self._temporary
        if self.is_temporary or not source.exists():
            return None
        target = self.path
        if target.exists():  # results of an earlier project of that name: never merged, never overwritten
            raise ResultsError(
                f"the results stay in the temporary file {source}: {target} exists already (another project's "
                "results?). Move or rename it, then save the project again"
            )
        copy_geopackage(source, target)
        for layer in layers:
            if layer.source().split("|", 1)[0] == str(source):
                layer.setDataSource(str(target) + layer.source()[len(str(source)) :], layer.name(), "ogr")
        self._temporary = self._new_temporary()
        return target

    def _new_temporary(self) -> Path:
        return self._temp_dir / f"think2seg-unsaved-{uuid.uuid4().hex[:12]}.gpkg"


def copy_geopackage(source: Path, target: Path) -> None:
    """A consistent copy of a GeoPackage (SQLite backup; written beside ``target``, then renamed)."""
    partial = target.with_name(target.name + ".partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
        partial.replace(target)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise ResultsError(f"cannot copy the results to {target} ({exc}): choose a writable folder") from exc
