"""Measuring what attention costs: time and peak memory, on the CPU or a GPU (chapter 8).

* On a GPU, peak memory is what PyTorch's caching allocator reports:
  ``torch.cuda.max_memory_allocated()`` during the call, minus what was
  allocated before it.
* On the CPU there is no such counter, so :class:`TensorMemoryTracker`
  counts it: it watches every operation PyTorch dispatches during the call,
  adds the bytes of each new tensor storage it creates and subtracts them
  when that storage is freed; the peak of that running total is reported.
  This is exactly the memory of the tensors the call creates (inputs not
  included), and it is deterministic. It does NOT see scratch memory that a
  fused kernel allocates inside itself without making a tensor of it (e.g.
  the tiles of ``F.scaled_dot_product_attention``'s CPU flash kernel), nor
  NumPy arrays, nor the interpreter's own memory.

Time is the median of a few runs (wall clock on the CPU, CUDA events on a GPU).
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Cost", "TensorMemoryTracker", "peak_tensor_bytes", "time_call", "measure_cost", "loglog_slope"]


class TensorMemoryTracker(TorchDispatchMode):
    """Context manager: peak bytes of tensor storages created inside it (CPU or GPU).

    After the ``with`` block, :attr:`peak` holds the largest total of live
    storages created inside it, and :attr:`live` what is still alive.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._owned: dict[tuple[str, int], int] = {}

    def _free(self, key: tuple[str, int], nbytes: int) -> None:
        if self._owned.pop(key, None) is not None:
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            (str(t.device), t.untyped_storage().data_ptr())
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = (str(t.device), storage.data_ptr())
            nbytes = storage.nbytes()
            if nbytes == 0 or key in inputs or key in self._owned:
                continue  # a view, an in-place result, or empty
            self._owned[key] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)
        return out


def peak_tensor_bytes(fn: Callable, *args, **kwargs) -> int:
    """Peak bytes of the tensors ``fn(*args, **kwargs)`` creates (see the module docstring).

    On a GPU this is ``torch.cuda.max_memory_allocated`` above the level
    before the call; elsewhere :class:`TensorMemoryTracker`'s peak.
    """
    tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    if tensors and tensors[0].is_cuda:
        dev = tensors[0].device
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        out = fn(*args, **kwargs)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - before
        del out
        return int(peak)
    with TensorMemoryTracker() as tracker:
        out = fn(*args, **kwargs)
        del out
    return tracker.peak


def time_call(fn: Callable, *args, repeats: int = 3, warmup: int = 1, statistic: str = "median", **kwargs) -> float:
    """Seconds of ``fn(*args, **kwargs)``: the median (or minimum) of ``repeats`` runs after ``warmup`` runs.

    ``statistic="min"`` is the better estimate of what the code itself costs on a
    busy machine: other processes can only make a run slower, never faster.
    With CUDA tensors among the arguments the runs are timed with CUDA events;
    without, by the wall clock (synchronising the GPU first and after, if CUDA is in use).
    """
    if not isinstance(repeats, int) or repeats < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got {repeats!r}, {warmup!r}")
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic={statistic!r}; choose 'median' or 'min'")
    tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    cuda = bool(tensors) and tensors[0].is_cuda
    # A closure without tensor arguments may still launch GPU work: wait for it around the clock.
    sync = (not cuda) and torch.cuda.is_available() and torch.cuda.is_initialized()
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args, **kwargs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(*args, **kwargs)
            if sync:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) if statistic == "median" else min(times)


@dataclass(frozen=True)
class Cost:
    """What one call cost: median seconds and peak bytes of the tensors it created."""

    seconds: float
    peak_bytes: int


def measure_cost(fn: Callable, *args, repeats: int = 3, warmup: int = 1, statistic: str = "median", **kwargs) -> Cost:
    """Time (:func:`time_call`) and peak memory (:func:`peak_tensor_bytes`) of ``fn(*args, **kwargs)``."""
    with torch.no_grad():
        seconds = time_call(fn, *args, repeats=repeats, warmup=warmup, statistic=statistic, **kwargs)
        peak = peak_tensor_bytes(fn, *args, **kwargs)
    return Cost(seconds, peak)


def loglog_slope(x, y) -> float:
    """The slope of the least-squares line through ``(log x, log y)``: ``y ~ x^slope``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError(f"need two or more positive (x, y) pairs of one shape; got {x.shape} and {y.shape}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])
