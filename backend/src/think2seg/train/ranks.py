"""The processes of a training run: one, or one per GPU under ``accelerate launch``.

Every process trains (TRL and Accelerate share the work and average the gradients); only the main
one decides about the run folder, cuts the data, evaluates, merges the model and writes the report,
while the others wait for it at each of those points.
"""

from __future__ import annotations

from typing import Any


class Ranks:
    """Accelerate's view of the launched processes (a single process without ``accelerate launch``)."""

    def __init__(self, requested_device: str) -> None:
        """``requested_device`` is ``--device``: on the CPU the processes talk over gloo (``torchrun``)."""
        import torch
        from accelerate import PartialState

        cpu = requested_device.strip().lower() == "cpu" or not torch.cuda.is_available()
        self._state: Any = PartialState(cpu=cpu)

    @property
    def main(self) -> bool:
        return bool(self._state.is_main_process)

    @property
    def count(self) -> int:
        return int(self._state.num_processes)

    def wait(self) -> None:
        """Hold every process here until all have arrived (nothing to do for one process)."""
        if self.count > 1:
            self._state.wait_for_everyone()

    def device(self, requested: str) -> str:
        """The device this process uses: its own under ``accelerate launch``, else ``requested``."""
        if self.count == 1:
            return requested
        device = self._state.device
        return "cpu" if device.type == "cpu" else str(device)
