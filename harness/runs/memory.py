"""Peak memory per method: resident set size on Linux (reset between methods), GPU allocator peak."""
from __future__ import annotations

import resource

import torch


def reset_peak() -> None:
    """Start a new peak window: Linux resets VmHWM when "5" is written to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux or not permitted: the peak then covers the whole process
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> dict:
    """{"rss_gib": peak resident memory since reset_peak, "gpu_gib": allocator peak or None}."""
    rss = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"rss_gib": rss, "gpu_gib": gpu}


def trim() -> None:
    """Collect garbage and hand freed heap memory back to the OS. glibc keeps the freed blocks of
    a finished trainer's tensors in its arenas, so without this the resident size stays GBs
    above what is in use for the rest of a comparison (bench/trainer_memory.py measures it)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back
        pass
