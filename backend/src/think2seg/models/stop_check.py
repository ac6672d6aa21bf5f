"""Greedy decoding whose stop decision is read one step late, so the host never waits on the GPU.

Transformers' decoding loop asks after every token whether all answers have ended, which copies a
flag from the GPU and makes the host wait there: the Python work of the next step (preparing its
inputs, launching its kernels or CUDA graph) then cannot overlap the current one. Transformers 5
ships a deferred check that reads the flag one step late (an asynchronous copy and an event; the
one extra step is undone), but turns it on only for Apple's ``mps`` devices.
:func:`deferred_stop_check` turns it on, in the calling thread only, for the other devices that
have events (CUDA). Greedy answers are unchanged; the tests check that token for token.

On a Transformers release without that class, the context changes nothing and decoding keeps the
per-step check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers.generation import utils as generation

log = logging.getLogger(__name__)

_state = threading.local()
_lock = threading.Lock()
_original: Any = None


@contextmanager
def deferred_stop_check(enabled: bool = True) -> Iterator[bool]:
    """Within the block, ``generate`` calls of this thread defer their stop check; yields whether
    this Transformers release can. The device must have events (CUDA does, the CPU does not)."""
    available = enabled and _install()
    previous = getattr(_state, "enabled", False)
    _state.enabled = available
    try:
        yield available
    finally:
        _state.enabled = previous


def _install() -> bool:
    """Route Transformers' ``DeferredStopCheck.is_supported`` through :func:`_is_supported` once."""
    global _original
    deferred = getattr(generation, "DeferredStopCheck", None)
    if deferred is None or not hasattr(deferred, "is_supported"):
        log.debug("this Transformers release has no deferred stop check: decoding checks every step")
        return False
    with _lock:
        if _original is None:
            _original = deferred.is_supported
            deferred.is_supported = staticmethod(_is_supported)
    return True


def _is_supported(device: Any, cache: Any, cache_is_returned: bool, is_assistant: bool) -> bool:
    if getattr(_state, "enabled", False) and not is_assistant:
        # Transformers' own rule for mps: the one extra step must be undoable in a returned cache.
        return cache is None or not cache_is_returned or bool(getattr(cache, "is_croppable", False))
    return bool(_original(device, cache, cache_is_returned, is_assistant=is_assistant))
