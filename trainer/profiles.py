"""Locked hardware profiles (sequence length, vocab, eval tokens, budget) and the hardware class."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from trainer.errors import BadOption

# Causality probes per evaluation at least, unless a profile says otherwise: the bound on what a
# model that peeks at future tokens gains is derived in trainer/metric.py (which imports torch,
# so the number lives here, where every profile and the evaluator's client can read it).
PROBES_MIN = 400


@dataclass(frozen=True)
class Profile:
    name: str
    max_seq_len: int        # tokens per training/eval row
    vocab_size: int         # BPE vocabulary, special tokens included
    eval_tokens: int        # tokens of val (and confirm) scored by evaluate_bpb
    eval_batch: int         # rows per eval forward; also the export example batch
    budget: float           # default training seconds
    warmup_batches: int     # synthetic batches the loader serves before the clock (compilation)
    startup_limit: float    # seconds; the clock starts by then at the latest (before the harness is ready, and
                            # until the baseline's own start-up was measured: trainer/startup.py)
    eval_limit: float       # seconds one locked evaluation may take
    memory_mb: int          # per process in the training and evaluation sandboxes (RLIMIT_DATA) and in total
    max_procs: int          # tasks (threads included) in a sandbox
    max_batch_tokens: int   # tokens in one batch a train.py may ask for
    max_artifact_mb: int    # the tensors of the submit frame at most this (its graph: serve.MAX_GRAPH_BYTES)
    scratch_mb: int         # the training sandbox's scratch (a private tmpfs): its disk quota
    probes_min: int = PROBES_MIN   # causality probes per evaluation at least (trainer/metric.py: the bound)


PROFILES: dict[str, Profile] = {
    # The original's scale: context 2048, vocab 8192, 5 minutes, ~20M eval tokens.
    "gpu": Profile("gpu", max_seq_len=2048, vocab_size=8192, eval_tokens=40 * 524288,
                   eval_batch=32, budget=300.0, warmup_batches=12, startup_limit=300.0,
                   eval_limit=600.0, memory_mb=65536, max_procs=1024, max_batch_tokens=1 << 23,
                   max_artifact_mb=16384, scratch_mb=32768),
    # Small enough to learn visibly in 60 s on 2 cores: on CPU the output head dominates,
    # so a small vocabulary buys steps.
    "cpu": Profile("cpu", max_seq_len=256, vocab_size=1024, eval_tokens=64 * 256 * 4,
                   eval_batch=16, budget=60.0, warmup_batches=1, startup_limit=30.0,
                   eval_limit=120.0, memory_mb=6144, max_procs=256, max_batch_tokens=1 << 20,
                   max_artifact_mb=1024, scratch_mb=2048),
}
# The cpu profile scoring 2 of its 16 eval batches, every position probed once (256 probes, not
# 448): for trying the machinery (the slow test tier's swarms, whose claims are not the score's
# precision), not for research. The evaluation, its causality probes included, is most of a short
# CPU run (measured here, a 5 s budget: eval 10.9 s of 18.9 s, val 3.2 s and probes 6.3 s of it).
# The probes' bound on a peeking model's gain goes from 0.0021 to 0.0036 bpb (trainer/metric.py),
# still under a third of the 0.011 sigma of 30 s runs. Same vocabulary and rows, so the same
# prepared data; its own hardware class (`cpu-...-cpu-smoke`): its results and noise history
# never mix with cpu's.
PROFILES["cpu-smoke"] = replace(PROFILES["cpu"], name="cpu-smoke", probes_min=1,
                                eval_tokens=2 * PROFILES["cpu"].eval_batch * PROFILES["cpu"].max_seq_len)


def detect_profile() -> str:
    """`SWARM_PROFILE` if set, else gpu when CUDA is visible, else cpu."""
    env = os.environ.get("SWARM_PROFILE")
    if env:
        get_profile(env)
        return env
    try:
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:  # a broken CUDA install must not stop a CPU run
        return "cpu"


def get_profile(name: str | None = None) -> Profile:
    name = name or detect_profile()
    if name not in PROFILES:
        raise BadOption(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
    return PROFILES[name]


def slug(text: str) -> str:
    """A short ref-name-safe slug: [a-z0-9-]."""
    s = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu\b|@.*$", "", text.lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s[:40].strip("-") or "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "unknown"


def gpu_name(device: str = "cuda") -> str:
    import torch
    return torch.cuda.get_device_name(torch.device(device))


def hardware_class(profile_name: str, device: str = "cpu", threads: int | None = None) -> str:
    """`cpu-<model>-<n>t` or `gpu-<gpu name>`, plus the profile when it is not the natural one.

    Results are only ever compared within one hardware class."""
    get_profile(profile_name)
    if device.startswith("cuda"):
        hc = f"gpu-{slug(gpu_name(device))}"
        natural = "gpu"
    else:
        n = threads or len(os.sched_getaffinity(0))
        hc = f"cpu-{slug(cpu_model())}-{n}t"
        natural = "cpu"
    if profile_name != natural:
        hc += f"-{profile_name}"
    return hc


# Peak dense bf16 FLOPs for MFU, as in the original (H100 SXM 989.5 TFLOPs).
PEAK_FLOPS = {"h100": 989.5e12, "h200": 989.5e12, "a100": 312e12, "l40s": 362e12,
              "a10g": 125e12, "4090": 165e12, "3090": 71e12}


def peak_flops(gpu: str) -> float | None:
    g = gpu.lower()
    for k, v in PEAK_FLOPS.items():
        if k in g:
            return v
    return None
