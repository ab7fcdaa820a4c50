"""What the machine can do: CPU features from /proc/cpuinfo or torch, the load, the memory bandwidth."""

import pytest
import torch

from lecture_utils import hardware


def test_cpu_features_from_cpuinfo_and_fallback(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    f = hardware.cpu_features(info)
    if f.arm_dot is None:  # x86 (the flags above are x86 names)
        assert (f.avx2, f.avx512, f.vnni, f.amx) == (True, True, True, False)
        assert "VNNI" in hardware.int8_outlook(f)
    assert f.model_name == "Test CPU" and f.source == str(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    f = hardware.cpu_features(info)
    if f.arm_dot is None:
        assert (f.avx2, f.vnni) == (True, False) and "no VNNI" in hardware.int8_outlook(f)
    fallback = hardware.cpu_features(tmp_path / "missing")  # as on macOS or Windows: torch's own detection
    assert fallback.source == "torch" and fallback.torch_capability == str(torch.backends.cpu.get_cpu_capability())
    assert hardware.cpu_features(None).source == "torch"
    assert set(fallback.as_dict()) >= {"avx2", "avx512", "vnni", "amx", "torch_capability"}


def test_load_per_core_is_a_non_negative_number_or_none():
    load = hardware.load_per_core()
    assert load is None or load >= 0


def test_memory_bandwidth_is_measured_in_gb_per_s_and_refuses_a_tiny_buffer():
    bw = hardware.memory_bandwidth_gbs(megabytes=32, repeats=2)
    assert bw.copy > 0 and bw.read > 0 and bw.megabytes == 32 and bw.threads >= 1
    with pytest.raises(ValueError, match="megabytes"):
        hardware.memory_bandwidth_gbs(megabytes=1)
    with pytest.raises(ValueError, match="repeats"):
        hardware.memory_bandwidth_gbs(repeats=0)
