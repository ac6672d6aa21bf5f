"""The bearer token: made on first start in a file only the user can read."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from think2seg.errors import Think2SegError

log = logging.getLogger(__name__)


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, created (0600, in a 0700 folder) when the file does not exist yet."""
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another server created it first: use theirs
            return _read(path)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return _read(path)


def _read(path: Path) -> str:
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("%s was readable by other users; restricting it to you (0600)", path)
        path.chmod(0o600)
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < 16:
        raise Think2SegError(f"the token in {path} is shorter than 16 characters: delete the file to make a new one")
    return token
