"""benchmarks/machine.py: the CPU line every latency figure is printed with."""

from __future__ import annotations

from benchmark_modules import load_benchmark

X86_AMX = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse4_2 avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8
processor	: 1
model name	: another
flags		: fpu
"""
X86_AVX2 = """processor	: 0
model name	: AMD EPYC
flags		: fpu sse4_2 fma avx avx2 sha_ni
"""
ARM = """processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp
CPU implementer	: 0x41
"""


def test_the_cpu_line_names_what_int8_kernels_it_has_and_lacks() -> None:
    m = load_benchmark("machine")
    line, flags = m.describe(X86_AMX, "x86_64")
    assert line == ("CPU: Intel(R) Xeon(R) Platinum 8480+ (x86_64); int8-relevant features: "
                    "amx_int8, avx512_vnni, avx512f, avx2; lacks avx_vnni")
    assert m.AMX_FEATURE in flags and "fpu" in flags  # the first CPU's flags, not the second's

    line, flags = m.describe(X86_AVX2, "x86_64")
    assert line.endswith("features: avx2; lacks amx_int8, avx512_vnni, avx_vnni, avx512f")
    assert m.AMX_FEATURE not in flags

    line, _ = m.describe(ARM, "aarch64")
    assert line == "CPU: unknown (aarch64); int8-relevant features: asimddp; lacks i8mm"

    line, flags = m.describe("", "x86_64")
    assert "features unknown" in line and not flags
