"""The plugin's one error hierarchy: every error it raises is a :class:`Think2SegError`.

Each subclasses a builtin as well (``TileError`` is a ``ValueError``, ``ResultsError`` an
``OSError``), and each message says what the user can do about it.
"""

from __future__ import annotations


class Think2SegError(Exception):
    """Base of the plugin's errors; ``str(error)`` is a message for the message bar."""


class TileError(Think2SegError, ValueError):
    """The visible part of the layer cannot be sent; the message says what to do."""


class PromptError(Think2SegError, ValueError):
    """The prompts to re-segment cannot be sent as they are (e.g. outside the visible window)."""


class RunInProgress(Think2SegError, RuntimeError):
    """A question or re-segmentation is already running; only one runs at a time."""


class ResultsError(Think2SegError, OSError):
    """The results GeoPackage cannot be written (read-only, locked, full disk)."""


class ExportError(Think2SegError, OSError):
    """An export cannot be written, or there is nothing to export."""
