"""Choose the compute device, dtype and attention kernel."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch

from think2seg.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePlan:
    """Where and how models run: bf16 on CUDA, float32 on CPU; flash-attention 2 when installed.

    ``compile``: a static KV cache for the LVLM, and on CUDA a compiled decoding step.
    """

    device: torch.device
    dtype: torch.dtype
    attn_implementation: str
    compile: bool = False

    @property
    def label(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)


def plan_device(spec: str = "auto", *, compile: bool = False) -> DevicePlan:
    """Resolve ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a :class:`DevicePlan`."""
    device = _device(spec.strip().lower())
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        flash = importlib.util.find_spec("flash_attn") is not None
        return DevicePlan(device, dtype, "flash_attention_2" if flash else "sdpa", compile)
    if compile:
        log.warning("--compile compiles only on a CUDA GPU: on the CPU it just preallocates the KV cache")
    return DevicePlan(device, torch.float32, "sdpa", compile)


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} asked for, but PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}): use --device cpu, "
                "or install a CUDA build of torch that matches your driver"
            )
        index = _cuda_index(spec)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")


def _cuda_index(spec: str) -> int:
    if spec == "cuda":
        return 0
    suffix = spec.split(":", 1)[1]
    if not suffix.isdigit():
        raise DeviceError(f"unknown device {spec!r}: use cuda:N with N a GPU number, e.g. cuda:0")
    return int(suffix)
