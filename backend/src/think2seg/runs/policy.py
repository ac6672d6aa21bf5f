"""What a run does with what its output already holds: start, continue, retry or replace.

One policy for every driver. A run is asked to ``resume`` (continue the run stored there),
``retry_failed`` (continue it and redo its failed items) or ``overwrite`` (start again); without any
of them an existing output is refused. A continued run must have the stored parameters exactly;
otherwise it is refused rather than mixed. The batch GeoPackage and the evaluation cache are the
two :class:`RunStore` implementations; :func:`open_run` applies the policy to either.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from think2seg.errors import InputError, OutputExistsError


@dataclass(frozen=True)
class Terms:
    """How a client asks for each choice, for the advice in messages (CLI flags or HTTP fields)."""

    resume: str
    overwrite: str


CLI_TERMS = Terms(resume="pass --resume", overwrite="pass --overwrite")
HTTP_TERMS = Terms(resume="set resume=true", overwrite="set overwrite=true")


class Opened(str, enum.Enum):
    """``new``: an empty run was created (replacing what was there); ``continued``: the stored one goes on."""

    NEW = "new"
    CONTINUED = "continued"


@dataclass(frozen=True)
class Continuation:
    """The client's choice about an existing output."""

    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    terms: Terms = CLI_TERMS

    @property
    def continues(self) -> bool:
        """Whether a stored run is to be continued (``overwrite`` wins over resuming)."""
        return (self.resume or self.retry_failed) and not self.overwrite

    def check_start(self, where: Path, *, exists: bool) -> None:
        """Refuse, before any work, an existing output that was neither to be continued nor replaced."""
        if exists and not (self.continues or self.overwrite):
            raise OutputExistsError(self.exists_message(where))

    def exists_message(self, where: Path) -> str:
        t = self.terms
        return f"{where} already exists: {t.resume} to continue the run in it, {t.overwrite} to start again, or choose another name"

    def differs_message(self, where: Path, changes: list[str]) -> str:
        return (
            f"{where} holds a run with other parameters ({'; '.join(changes)}): resume with the same options, "
            f"or {self.terms.overwrite} to start again"
        )

    def unreadable_message(self, where: Path, why: str) -> str:
        return f"{where} {why}, so it cannot be resumed: {self.terms.overwrite} to replace it, or choose another name"


class RunStore(Protocol):
    """Where a run keeps its parameters and finished items (a GeoPackage, a cache folder)."""

    @property
    def where(self) -> Path:
        """The output's path, for messages."""
        ...

    def exists(self) -> bool:
        """Whether anything of an earlier run is there."""
        ...

    def stored_params(self, policy: Continuation) -> Mapping[str, Any] | None:
        """The stored run's parameters; None when nothing there can be continued (start anew).
        Raises an error with ``policy``'s advice when what is there cannot be read."""
        ...

    def complete(self) -> bool:
        """Whether the stored run was fully set up (a run killed while creating it holds nothing)."""
        ...

    def remove(self) -> None: ...

    def create(self) -> None: ...

    def clean(self, *, retry_failed: bool) -> None:
        """Drop the traces of unfinished attempts and, with ``retry_failed``, the failed items."""
        ...


def differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``name: stored -> requested`` for every requested parameter whose stored value differs."""
    return [
        f"{name}: {stored.get(name)!r} -> {value!r}" for name, value in requested.items() if stored.get(name) != value
    ]


def open_run(store: RunStore, params: Mapping[str, Any], policy: Continuation) -> Opened:
    """Continue the run in ``store`` or start a new one there, as ``policy`` says.

    Refuses an existing output without resume/overwrite (:class:`OutputExistsError`) and a stored
    run with other parameters (:class:`InputError`).
    """
    exists = store.exists()
    policy.check_start(store.where, exists=exists)
    if exists and policy.continues:
        stored = store.stored_params(policy)
        if stored is not None:
            changes = differences(stored, params)
            if changes:
                raise InputError(policy.differs_message(store.where, changes))
            if store.complete():
                store.clean(retry_failed=policy.retry_failed)
                return Opened.CONTINUED
    store.remove()
    store.create()
    return Opened.NEW
