"""Find model weights: a local folder, the Hugging Face cache, or a download from the Hub."""

from __future__ import annotations

import logging
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from think2seg.errors import WeightsUnavailableError

log = logging.getLogger(__name__)

DEFAULT_LVLM = "RicardoString/Think2Seg-RS-3B"
"""The default prompter: Think2Seg-RS 3B (a fine-tuned Qwen2.5-VL-3B)."""

DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-small"
"""The segmenter used in training and every evaluation: SAM 2.1 hiera-small, Transformers format."""

WEIGHT_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken")
"""What a Transformers model needs; original .pt/.bin duplicates are skipped."""


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder (HF_HUB_CACHE / HF_HOME aware)."""
    return Path(constants.HF_HUB_CACHE)


def resolve_model_dir(source: str, *, flag: str, download: bool = True) -> Path:
    """The local folder holding the model ``source`` (a folder or a Hub id).

    Hub ids come from the cache when present, else are downloaded into it with a progress bar.
    ``flag`` is the command-line option that takes this model, used in error messages.
    """
    folder = check_local_source(source, flag=flag)
    if folder is not None:
        return folder
    cached = cached_model_dir(source)
    if cached is not None:
        return cached
    if not download:
        raise _unavailable(source, flag, "not in the cache")
    return _download(source, flag)


def check_local_source(source: str, *, flag: str) -> Path | None:
    """The model folder ``source`` names, None for a Hub id; refuses a missing folder or one
    without a saved model. Reads no network, so it can check options before anything loads."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsUnavailableError(
                f"the folder {path} has no config.json: give the folder a Transformers model was saved in "
                f"(save_pretrained, or `hf download REPO --local-dir {path}`)"
            )
        return path
    if _looks_like_path(source):
        raise WeightsUnavailableError(f"the model folder {path} does not exist: check the path given to {flag}")
    return None


def cached_model_dir(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id``, or None when the cache does not hold it."""
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=list(WEIGHT_PATTERNS), local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError):
        return None
    return Path(folder) if (Path(folder) / "config.json").is_file() else None


def _download(repo_id: str, flag: str) -> Path:
    log.info("downloading %s into %s", repo_id, hub_cache_dir())
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=list(WEIGHT_PATTERNS))
    except HFValidationError as exc:
        raise WeightsUnavailableError(
            f"{repo_id!r} is neither an existing folder nor a Hugging Face Hub id (owner/name): check {flag}"
        ) from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise WeightsUnavailableError(
            f"{repo_id!r} is not a public model on the Hugging Face Hub: check the id given to {flag}, "
            "log in with `hf auth login` if it is gated, or pass a local folder"
        ) from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise _unavailable(repo_id, flag, _reason(exc)) from exc
    return Path(folder)


def _unavailable(repo_id: str, flag: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot get the weights of {repo_id!r}: {reason}. The Hugging Face cache {hub_cache_dir()} does not "
        f"hold them. On a machine with internet run `think2seg download` (or `hf download {repo_id} "
        f"--local-dir DIR`) and copy the cache or DIR here, then pass {flag} DIR"
    )


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if "ConnectError" in text or "Name or service not known" in text or "connection" in text.lower():
        return "the Hugging Face Hub cannot be reached (no network?)"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    return text[:200] or type(exc).__name__


def _looks_like_path(source: str) -> bool:
    """A folder, not a Hub id (``owner/name``); Windows' ``/`` separator alone does not decide."""
    return source.startswith((".", "/", "~")) or "\\" in source or ":" in source or source.count("/") != 1
