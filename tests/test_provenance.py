"""Every model and run records what selects its numerical kernels, so that two results that
differ can be told apart (machine, instruction sets, threads, BLAS/oneDNN, overrides)."""
import torch

from opdbench.provenance import machine, stamp


def test_the_stamp_records_the_machine_and_the_libraries():
    info = stamp(role="teacher")
    assert {"torch", "transformers", "tokenizers", "python"} <= set(info["libraries"]) and info["role"] == "teacher"
    m = info["machine"]
    assert m["cpu"] and m["logical_cpus"] >= 1 and m["torch_threads"] == torch.get_num_threads()
    assert m["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert all(flag.startswith(("avx", "amx", "fma", "f16c", "sse")) for flag in m["isa_flags"])
    assert "blas" in m and "onednn" in m


def test_kernel_overrides_and_thread_counts_are_recorded(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert machine()["kernel_env"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert machine()["torch_threads"] == 1
    finally:
        torch.set_num_threads(threads)
