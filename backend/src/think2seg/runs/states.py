"""The states of the things a run goes through: tiles (and evaluation samples) and server jobs."""

from __future__ import annotations

import enum

from think2seg.result import ResultStatus


class TileStatus(str, enum.Enum):
    """How a tile (or an evaluation sample) ended, as the ``status`` column of ``tiles`` says: one
    of a model answer's :class:`ResultStatus` values, or one the models never produced."""

    OK = ResultStatus.OK.value
    """Targets found: the tile's pieces are in ``tile_pieces``."""
    NO_TARGET = ResultStatus.NO_TARGET.value
    """The model answered that there is none here."""
    UNPARSEABLE = ResultStatus.UNPARSEABLE.value
    """The answer could not be read (kept in ``raw_answer``); redone by ``--retry-failed``."""
    NO_DATA = ResultStatus.NO_DATA.value
    """Only nodata pixels: no model was run."""
    FAILED = "failed"
    """An error (its message kept); redone by ``--retry-failed``."""
    OUTSIDE_AOI = "outside_aoi"
    """The tile misses the area of interest: never read."""

    @classmethod
    def from_result(cls, status: ResultStatus) -> TileStatus:
        return cls(status.value)

    @property
    def is_failure(self) -> bool:
        """Counted as a failure, and redone by ``--retry-failed``."""
        return self in (TileStatus.FAILED, TileStatus.UNPARSEABLE)

    @property
    def was_processed(self) -> bool:
        """The models were asked (successfully or not), as opposed to skipped."""
        return self not in (TileStatus.NO_DATA, TileStatus.OUTSIDE_AOI)


RETRY_STATUSES = tuple(s.value for s in TileStatus if s.is_failure)


class JobState(str, enum.Enum):
    """A server job: ``running`` until it is ``done``, ``failed`` or ``cancelled`` (resumable)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
