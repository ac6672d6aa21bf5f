"""What a server instance allows and which models it serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from think2seg.models.qwen import MAX_NEW_TOKENS
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.runs.microbatch import AUTO, BatchSize

API_VERSION = "1"
DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def default_token_file() -> Path:
    """The token file in the user's config folder (e.g. ~/.config/think2seg/token on Linux)."""
    return Path(platformdirs.user_config_dir("think2seg", appauthor=False)) / "token"


@dataclass(frozen=True)
class ServerSettings:
    """Server options; every limit is in the unit its name says.

    ``data_roots``: folders that ``raster_path``, ``output_path`` and ``aoi_path`` must resolve into
    (default: the user's home folder); ``any_path`` lifts that limit, for a backend on a loopback
    host that only this user's QGIS talks to (paths must still be absolute). ``allowed_origins`` and
    ``allowed_hosts`` widen the default policy, which refuses any browser ``Origin`` and any
    ``Host`` but this machine's names.
    ``batch_size``: how many waiting questions may share one model batch (``auto``: see
    :mod:`think2seg.runs.microbatch`).
    ``job_workers``: Ray model workers a batch job gets when its request does not say (0 runs jobs
    on the server's own models); ``ray_address``: the Ray cluster they join (else ``RAY_ADDRESS``,
    else a local instance).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token_file: Path = field(default_factory=default_token_file)
    data_roots: tuple[Path, ...] = field(default_factory=lambda: (Path.home(),))
    any_path: bool = False
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    lvlm: str = DEFAULT_LVLM
    segmenter: str = DEFAULT_SEGMENTER
    device: str = "auto"
    max_new_tokens: int = MAX_NEW_TOKENS
    compile: bool = False
    max_upload_mb: int = 256
    max_upload_pixels: int = 4096 * 4096
    max_side_px: int = 4096
    max_window_pixels: int = 32768 * 32768
    queue_size: int = 8
    max_jobs: int = 4
    batch_size: BatchSize = AUTO
    job_workers: int = 0
    ray_address: str | None = None

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20

    def resolved_roots(self) -> tuple[Path, ...]:
        return tuple(root.expanduser().resolve() for root in self.data_roots)
