"""A training run's folder as a run store, under the shared resume / overwrite policy.

``RUN/train.json`` holds the run's parameters (what a resumed run must match), its data counts,
the reward curve and its status; it is rewritten atomically after each phase. The folder also
holds ``data/`` (the cut tiles), ``checkpoints/``, ``eval/``, ``adapter/``, ``lvlm/``, ``examples/``
and ``report.md``. Only a folder that holds a ``train.json`` is ever removed (``--overwrite``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from think2seg.errors import InputError, OutputError
from think2seg.output.atomic import atomic_output
from think2seg.runs.policy import Continuation

RECORD = "train.json"
RUN_FORMAT = 1


class TrainStore:
    """The run folder; a :class:`~think2seg.runs.policy.RunStore`."""

    def __init__(self, run_dir: Path, params: Mapping[str, Any]) -> None:
        self.where, self.params = run_dir, dict(params)
        self.record_path = run_dir / RECORD

    def exists(self) -> bool:
        if self.where.is_dir():
            return any(self.where.iterdir())
        return self.where.exists()

    def stored_params(self, policy: Continuation) -> Mapping[str, Any] | None:
        record = self.read()
        if record is None:
            raise InputError(policy.unreadable_message(self.where, f"holds no readable {RECORD}"))
        return record.get("params")

    def complete(self) -> bool:
        record = self.read()
        return record is not None and record.get("format") == RUN_FORMAT

    def remove(self) -> None:
        if not self.where.exists():
            return
        if not self.where.is_dir():
            raise OutputError(f"{self.where} is a file: give a folder name for the training run")
        if any(self.where.iterdir()) and not self.record_path.is_file():
            raise OutputError(
                f"{self.where} is not empty and is not a think2seg training run (no {RECORD}): "
                "choose a new folder, so nothing of yours is deleted"
            )
        shutil.rmtree(self.where)

    def create(self) -> None:
        try:
            self.where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the run folder {self.where}: {exc.strerror}") from exc
        self.write({"format": RUN_FORMAT, "params": self.params, "status": "started", "curve": []})

    def clean(self, *, retry_failed: bool) -> None:
        """Nothing to drop: checkpoints are whole or absent (the trainer writes them so)."""

    def read(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into train.json (rewritten whole); returns the record."""
        record = self.read() or {"format": RUN_FORMAT, "params": self.params}
        record.update(fields)
        self.write(record)
        return record

    def write(self, record: Mapping[str, Any]) -> None:
        with atomic_output(self.record_path, overwrite=True) as temporary:
            temporary.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")

    def last_checkpoint(self) -> Path | None:
        """The newest complete trainer checkpoint under ``checkpoints/``."""
        folder = self.where / "checkpoints"
        found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
        found = [p for p in found if (p / "trainer_state.json").is_file()]
        return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None
