"""The one error hierarchy of the backend.

Every error think2seg raises on purpose derives from :class:`Think2SegError` and from the builtin
that fits (``ValueError`` for bad values, ``OSError`` for files and downloads), so callers can catch
either. Messages are one line and say what to do next.
"""

from __future__ import annotations


class Think2SegError(Exception):
    """Base class of the errors think2seg raises on purpose."""


class InputError(Think2SegError, ValueError):
    """An argument has a value think2seg cannot use (question, bounds, options)."""


class QuestionError(InputError):
    """The question is empty or too long."""


class BoundsError(InputError):
    """The requested bounds are malformed or miss the raster."""


class RasterError(Think2SegError, OSError):
    """The raster cannot be opened or read."""


class RasterNotFoundError(RasterError, FileNotFoundError):
    """The raster file does not exist."""


class RasterUnreachableError(RasterError, ConnectionError):
    """A raster or a service on the network cannot be reached (refused, timed out, no route)."""


class MissingCRSError(Think2SegError, ValueError):
    """The raster has no coordinate reference system and pixel coordinates were not accepted."""


class EmptyWindowError(Think2SegError, ValueError):
    """The window holds only nodata pixels, so there is nothing to segment."""


class OutputError(Think2SegError, OSError):
    """An output file cannot be written where it was asked for."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and overwriting was not allowed."""


class ModelError(Think2SegError, RuntimeError):
    """A model could not be loaded or failed while running."""


class WeightsUnavailableError(Think2SegError, OSError):
    """Model weights are neither in a local folder nor in the cache, and the Hub cannot be reached."""


class DeviceError(Think2SegError, RuntimeError):
    """The requested compute device does not exist or cannot be used."""


class Cancelled(Think2SegError):
    """A run was asked to stop; what it finished is saved."""
