"""Paths from clients must be absolute and resolve (symlinks and .. included) inside the server's
data roots, unless the server lets them use any path (``serve --any-path``)."""

from __future__ import annotations

from pathlib import Path

from think2seg.server.errors import ApiError
from think2seg.server.settings import ServerSettings


def allowed_path(text: str, settings: ServerSettings, *, what: str) -> Path:
    """``text`` resolved, if the settings allow it; else 403 (or 422 when not absolute or holding NUL)."""
    if "\x00" in text:
        raise ApiError(422, "invalid_input", f"the {what} contains a NUL character")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ApiError(422, "invalid_input", f"the {what} must be an absolute path on the server, got {text!r}")
    resolved = path.resolve(strict=False)
    if settings.any_path:
        return resolved
    roots = settings.resolved_roots()
    if not any(resolved.is_relative_to(root) for root in roots):
        listed = ", ".join(str(r) for r in roots)
        raise ApiError(
            403,
            "path_not_allowed",
            f"the {what} {text} resolves to {resolved}, outside the data roots ({listed}): "
            "start the server with --data-root FOLDER to allow that folder",
        )
    return resolved
