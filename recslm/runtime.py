"""The numeric runtime a stage computes under: thread count, seeds, deterministic kernels.

recslm's store is content-addressed, which only holds if a stage's output is a function of
its key. Measured on this project's CPU machine: the same training run with 1 and with 2
torch threads gives different weights (parallel reductions split the work by thread count,
not by core count: 2 threads on one core equal 2 threads on two). So the thread count is
fixed by the config (``runtime.threads``, never the machine's core count), applied the same
way in-process, in a Slurm job and in a pod, and it is part of every compute stage's key.

What is promised: the same config (seeds and ``runtime`` included) on the same kind of
machine (CPU type, library versions) gives bit-identical artifacts on every backend. What
is not: identical bits across thread counts, CPU types or GPU models; README "Determinism"
gives the measured size of those differences.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
from collections.abc import Iterator

from recslm.config import RuntimeConfig

# Read by OpenMP, MKL and OpenBLAS when a process starts: a worker (Slurm job, pod, torchrun
# rank) gets them so that even code running before recslm sets torch's count agrees.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# The runtime of the stage computing in this thread (set by ``pinned_runtime``): what the
# training arguments and model loading read for device and precision, so the settings
# reach every trainer without being threaded through each stage's signature.
_CURRENT: contextvars.ContextVar[RuntimeConfig | None] = contextvars.ContextVar("recslm_runtime", default=None)


def current_runtime() -> RuntimeConfig:
    """The runtime of the stage computing in this thread; the defaults outside a stage."""
    return _CURRENT.get() or RuntimeConfig()


def worker_env(runtime: RuntimeConfig) -> dict[str, str]:
    """Environment variables a worker process is started with, so its thread pools match ``runtime``."""
    env = {name: str(runtime.threads) for name in THREAD_ENV_VARS}
    if runtime.deterministic:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS's deterministic mode needs a fixed workspace
    return env


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every GPU)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def pinned_runtime(runtime: RuntimeConfig, seed: int) -> Iterator[None]:
    """Compute under ``runtime`` in this thread: its thread count, deterministic kernels, seeded
    global generators; everything is restored on exit (in-process stages share the process).

    Stages still pass their own seeds to what they build (initialization, data order); the
    global seed here covers anything that draws from the global generators without one.
    """
    import torch

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_env = {name: os.environ.get(name) for name in worker_env(runtime)}
    torch.set_num_threads(runtime.threads)
    os.environ.update(worker_env(runtime))  # subprocesses the stage starts (torchrun ranks, tokenizers)
    if runtime.deterministic:
        # warn_only: an op without a deterministic kernel (some CUDA scatter/index backward
        # passes) warns instead of failing the stage; on the CPU every op recslm uses has one
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    seed_everything(seed)
    token = _CURRENT.set(runtime)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        for name, value in previous_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
