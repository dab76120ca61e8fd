"""Device-side timing: CUDA events on a GPU, the host clock on a CPU."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stamp:
    """A point in time on the device stream (CUDA event) or on the host clock (CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.event: torch.cuda.Event | None = None
        self.host = 0.0
        if device.type == "cuda":
            self.event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            self.event.record()
        else:
            self.host = time.perf_counter()

    def ms_to(self, other: Stamp) -> float:
        """Milliseconds from this stamp to a later one (synchronize first on CUDA)."""
        if self.event is not None and other.event is not None:
            return float(self.event.elapsed_time(other.event))
        return (other.host - self.host) * 1e3


def time_ms(
    fn: Callable[[], Any], device: torch.device, iters: int, warmup: int, inner: int = 1
) -> float:
    """Median milliseconds per call of ``fn``.

    Args:
        fn: The work.
        device: Its device.
        iters: Timed samples.
        warmup: Untimed calls first.
        inner: Back-to-back calls per sample (keeps the launch queue full for short kernels).

    Returns:
        Median milliseconds per call.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        a = Stamp(device)
        for _ in range(inner):
            fn()
        b = Stamp(device)
        sync(device)
        times.append(a.ms_to(b) / inner)
    times.sort()
    return times[len(times) // 2]
