"""Which CPU a benchmark ran on, and which of its features decide XNNPACK's int8 kernels.

Latency ratios between int8 and float graphs depend on the CPU more than on the graph: lhp-small's
``--target amx`` int8 form ran at 0.97x float on an x86 CPU with AMX and at 1.25x on an
AVX2-only one (``benchmarks/latency.py``, each CPU's own training of the synthetic 20-epoch
checkpoint; the README's latency section), so every figure has to say which CPU it came from. The int8 GEMM and depthwise kernels XNNPACK picks are set by these features:

* x86: ``amx_int8`` (tiles of 16 pixels x 64 channels, the cost model of ``--target amx``),
  ``avx512_vnni`` / ``avx_vnni`` (int8 dot products), else ``avx2`` (int8 widened to int16 and
  multiplied there: per multiply-accumulate slower than float's FMA);
* Arm: ``asimddp`` (SDOT) and ``i8mm`` (SMMLA); without them int8 widens to int16 as well.
"""

from __future__ import annotations

import platform
from pathlib import Path

#: the CPU features that select XNNPACK's int8 kernels, best first, per architecture family
INT8_FEATURES = {"x86": ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2"),
                 "arm": ("i8mm", "asimddp")}
#: the feature ``--target amx`` is made for (``lhp_tf.converters.deploy``)
AMX_FEATURE = "amx_int8"


def cpu_features(cpuinfo: str) -> tuple[str, set[str]]:
    """CPU model name and feature flags from the text of ``/proc/cpuinfo`` (first CPU)."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def describe(cpuinfo: str | None = None, machine: str | None = None) -> tuple[str, set[str]]:
    """One line naming the CPU and which int8-relevant features it has and lacks, and its flags.
    Reads ``/proc/cpuinfo`` when ``cpuinfo`` is None (elsewhere the model stays unknown)."""
    machine = machine or platform.machine()
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    model, flags = cpu_features(cpuinfo)
    family = "arm" if machine.lower().startswith(("arm", "aarch64")) else "x86"
    wanted = INT8_FEATURES[family]
    has = [f for f in wanted if f in flags]
    lacks = [f for f in wanted if f not in flags]
    if not flags:
        return f"CPU: {model or 'unknown'} ({machine}); features unknown (no /proc/cpuinfo)", flags
    return (f"CPU: {model or 'unknown'} ({machine}); int8-relevant features: {', '.join(has) or 'none'}"
            f"{'; lacks ' + ', '.join(lacks) if lacks else ''}"), flags
