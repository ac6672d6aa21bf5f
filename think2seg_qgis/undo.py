"""Runs as undo steps: adding a run (and taking away what it replaces) is one step; undo reverses both."""

from __future__ import annotations

from collections.abc import Callable

from .compat import QUndoCommand
from .errors import ResultsError
from .log import guard_slot
from .results import Replaced, ResultStore, RunFeatures


class AddRunCommand(QUndoCommand):
    """One run on the undo stack: saves its features and takes away the features it replaces (a
    re-segment's corrected run and drawn prompts); undo reverses both.

    ``text`` names the step in the Undo/Redo buttons ("question “segment the river”");
    ``summary`` is the result line the dock shows while this run is the newest one on the map.
    Call :meth:`apply` before pushing it: it raises :class:`~.errors.ResultsError` with nothing
    changed when the run cannot be saved, so a failed run never becomes an undo step. Later redo
    and undo failures go to ``report``.
    """

    def __init__(
        self,
        store: ResultStore,
        run: RunFeatures,
        text: str,
        *,
        summary: str,
        replaced: Replaced | None = None,
        report: Callable[[str], None],
    ) -> None:
        super().__init__(text)
        self.store, self.run, self.summary, self.replaced, self.report = store, run, summary, replaced, report
        self._pushed_done = False

    def apply(self) -> None:
        """Do the run now (before the push, whose redo() then does nothing); raises ResultsError."""
        self._do()
        self._pushed_done = True

    @guard_slot
    def redo(self) -> None:
        if self._pushed_done:
            self._pushed_done = False
            return
        self._try(self._do)

    @guard_slot
    def undo(self) -> None:
        self._try(self._revert)

    def _do(self) -> None:
        self.store.add(self.run)
        if self.replaced is not None:
            try:
                self.store.take(self.replaced)
            except ResultsError:
                self.store.take_back(self.run)
                raise

    def _revert(self) -> None:
        self.store.remove(self.run)
        if self.replaced is not None:
            self.store.put_back(self.replaced)

    def _try(self, action: Callable[[], None]) -> None:
        try:
            action()
        except ResultsError as exc:
            self.report(f"{self.text()}: {exc}")
