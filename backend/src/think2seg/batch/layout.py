"""The batch GeoPackage's layers, and the columns a file stored by an older version is given when
it is continued."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pyogrio

from think2seg.output.gpkg import with_gpkg_functions

LAYERS = ("runs", "tiles", "tile_pieces", "prompt_boxes", "prompt_points")


ADDED_COLUMNS = {
    "tiles": {"question": "TEXT", "class": "TEXT"},
    "tile_pieces": {"score": "REAL", "question": "TEXT", "class": "TEXT"},
    "prompt_boxes": {"score": "REAL", "class": "TEXT"},
    "prompt_points": {"score": "REAL", "class": "TEXT"},
    "segments": {"score": "REAL", "class": "TEXT"},
    "runs": {"class": "TEXT"},
}
"""Columns added since the first batch layout: a run stored before them gets them when it is
continued (scores NULL, i.e. unknown; question and class filled in), so its old and new rows fit
one table."""


def add_missing_columns(path: Path, added: dict[str, dict[str, str]], *, question: str) -> None:
    """Add ``added``'s missing columns; ``question`` is the stored run's (runs stored before classes
    asked one question, which is then every row's question and class)."""
    with closing(with_gpkg_functions(sqlite3.connect(path))) as connection, connection:
        for layer, columns in added.items():
            present = {row[1] for row in connection.execute(f'PRAGMA table_info("{layer}")')}
            if not present:  # no such table yet (segments before the first finalize)
                continue
            for name, kind in columns.items():
                if name not in present:
                    connection.execute(f'ALTER TABLE "{layer}" ADD COLUMN "{name}" {kind}')
                    if name == "question":
                        connection.execute(f'UPDATE "{layer}" SET "question" = ?', (question,))
                    if name == "class":  # a run without named classes: its class is its question
                        connection.execute(f'UPDATE "{layer}" SET "class" = question')


def remove_gpkg(path: Path) -> None:
    """Delete a GeoPackage and SQLite's files beside it."""
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)


def has_all_layers(path: Path) -> bool:
    return set(LAYERS) <= {str(name) for name, _ in pyogrio.list_layers(path)}


def sql_text(text: str) -> str:
    """``text`` as an SQL string literal (for pyogrio's ``where``)."""
    return "'" + text.replace("'", "''") + "'"
