"""Benchmark results name the CPU precisely enough to tell two generations sold under one name apart."""

from bench.harness.report import cpu_description, machine_info

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16

processor\t: 1
cpu family\t: 25
model\t\t: 17
model name\t: another CPU
flags\t\t: fpu sse2
"""


def test_the_first_processor_is_described_with_family_model_and_avx512():
    assert cpu_description(CPUINFO) == {"cpu": "AMD EPYC", "cpu_family": 26, "cpu_model": 2, "avx512": True}


def test_a_cpuinfo_without_those_fields_leaves_them_empty():
    assert cpu_description("processor\t: 0\nflags\t\t: sse2\n") == {
        "cpu": "",
        "cpu_family": None,
        "cpu_model": None,
        "avx512": False,
    }


def test_machine_info_carries_the_description():
    info = machine_info()
    assert {"cpu", "cpu_family", "cpu_model", "avx512", "cores", "load_average_at_start"} <= set(info)
    assert info["cpu"]
