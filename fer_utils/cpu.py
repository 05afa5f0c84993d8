"""What this CPU computes fast: its vector instructions, and whether it has bfloat16.

Figures in the course (minutes, images per second) depend on it: an AVX-512 CPU with
bfloat16 trains the kit's models several times faster than an AVX2-only laptop. The
`ONEDNN_MAX_CPU_ISA` setting (e.g. AVX2) makes oneDNN, and these answers, act like a CPU with
fewer instructions.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_supports_bf16", "cpu_description", "cpu_model"]

# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) from which bfloat16 runs natively.
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
              "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
              "AVX10_2_512_AMX_2", "DEFAULT", "ALL")


def _cpu_flags(cpuinfo: str | None) -> set:
    """The flags of /proc/cpuinfo (or of the text given)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    return set(cpuinfo.replace("\n", " ").split())


def cpu_supports_bf16(cpuinfo: str | None = None, environ=None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX) and oneDNN may use it.

    `ONEDNN_MAX_CPU_ISA` below AVX512_CORE_BF16 (e.g. AVX2, to run like an AVX2-only laptop)
    turns bfloat16 off, as on such a CPU.
    """
    cap = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap not in _BF16_ISAS:
        return False
    return bool(_cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_description(cpuinfo: str | None = None, environ=None) -> str:
    """A few words on the CPU's vector instructions: "AVX-512 + bf16", "AVX2 (no bf16)"..."""
    flags = _cpu_flags(cpuinfo)
    cap = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE/AVX"
    if cap and not cap.upper().startswith(("AVX512", "AVX10", "DEFAULT", "ALL")):
        isa = f"{cap.upper()} (capped by ONEDNN_MAX_CPU_ISA)"
    bf16 = "bf16" if cpu_supports_bf16(cpuinfo, environ) else "no bf16"
    return f"{isa}, {bf16}"


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Core(TM) i7-1165G7 ..."), or the machine."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
