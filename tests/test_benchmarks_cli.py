"""The benchmark scripts run on a CPU: --help, and a --dry-run end to end."""

from __future__ import annotations

import json

import pytest

from helpers import load_benchmark


@pytest.mark.parametrize("name", ["bench_flash", "bench_decode"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        load_benchmark(name).main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--out" in out


def test_flops_convention():
    bench = load_benchmark("bench_flash")
    assert bench.attention_flops(2, 16, 4096, 128, False) == 4 * 2 * 16 * 4096**2 * 128
    assert bench.attention_flops(2, 16, 4096, 128, True) == 2 * 2 * 16 * 4096**2 * 128
    assert bench.attention_flops(1, 1, 10, 8, False, backward=True) == 2.5 * 4 * 100 * 8
    configs = bench.grid([512, 16384], [64, 128])
    assert all(c["B"] * c["N"] == 16384 and c["H"] * c["d"] == 2048 for c in configs)
    assert len(configs) == 8  # 2 N x 2 d x causal and not


def test_flash_dry_run_writes_json(tmp_path, capsys):
    out = tmp_path / "flash.json"
    assert load_benchmark("bench_flash").main(["--dry-run", "--out", str(out), "--ns", "512", "--ds", "64"]) == 0
    data = json.loads(out.read_text())
    assert data["dry_run"] and data["environment"]["device"] == "cpu"
    methods = {r["method"] for r in data["grid"]}
    assert {"torch-twin", "sdpa-math", "sdpa-default"} <= methods
    assert all(r["fwd_ms"] > 0 for r in data["grid"])
    assert "| d | N | causal |" in data["table"] and "| 16 | 64 | 1 |" in data["table"]
    assert "B= 32 H= 32 N=   512 d= 64" in capsys.readouterr().out  # the planned GPU grid


def test_decode_dry_run_writes_json(tmp_path):
    out = tmp_path / "decode.json"
    assert load_benchmark("bench_decode").main(["--dry-run", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["splits"][0]["split_ms"] > 0 and data["splits"][0]["one_block_ms"] > 0
    assert data["generate"]["same_tokens"] is True  # cached == recomputed, greedy


def test_mha_step_dry_run_interleaves_both_backends(tmp_path):
    out = tmp_path / "mha.json"
    assert load_benchmark("bench_mha_step").main(["--dry-run", "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["ms_per_step"]) == {"minitransformer", "torch"} and data["rounds"] == 2
    assert all(t > 0 for times in data["ms_per_step"].values() for t in times)
    assert data["ratios"]["minitransformer"]["median"] > 0


def test_gpu_mode_refuses_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert load_benchmark("bench_flash").main(["--ns", "512"]) == 2
    assert load_benchmark("bench_decode").main([]) == 2


def test_kv_cache_cpu_benchmark_asserts_same_tokens(tmp_path):
    out = tmp_path / "kv.json"
    assert load_benchmark("bench_kv_cache_cpu").main(["--lengths", "4", "9", "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["new_tokens"] for r in rows] == [4, 9]
    assert all(r["same_tokens"] and r["cached_s"] > 0 and r["recompute_s"] > 0 for r in rows)
