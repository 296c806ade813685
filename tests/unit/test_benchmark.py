"""`headstart benchmark`: every runtime x precision x batch measured, FLOPs from torch's
counter, the JSON, the PNG, and runs' accuracy set against their backbone's latency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headstart.benchmark import measure
from headstart.cli.main import main
from tests.conftest import TINY


def test_benchmark_measures_each_configuration_and_places_the_runs(
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(measure, "MIN_SECONDS", 0.05)
    out = tmp_path / "bench"
    argv = ["benchmark", TINY, "--batch-sizes", "1,2", "--runtimes", "torch,onnx",
            "--precision", "fp32,int8", "--runs", str(trained_run), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    found = json.loads((out / "benchmark.json").read_text())
    got = {(m["runtime"], m["precision"], m["batch"]) for m in found["measurements"]}
    # int8 is an ONNX precision: torch runs fp32 only here
    assert got == {(r, p, b) for r, p in [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
                   for b in (1, 2)}  # fmt: skip
    for m in found["measurements"]:
        assert 0 < m["p50_ms"] <= m["p95_ms"] and m["images_per_s"] > 0
        assert m["gflops"] > 0 and m["params"] > 0 and m["weights"].startswith("random")
    assert found["runs"][0]["backbone"] == TINY and 0 <= found["runs"][0]["val_acc"] <= 1
    assert (out / "benchmark.png").stat().st_size > 0
    assert f"run {trained_run}: {TINY}" in printed and "ms/image" in printed


def test_benchmark_says_which_requested_precision_this_machine_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.training import precision

    monkeypatch.setattr(measure, "MIN_SECONDS", 0.01)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    argv = ["benchmark", TINY, "--batch-sizes", "1", "--runtimes", "torch",
            "--precision", "fp32,bf16", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipped torch bf16: --precision bf16, but this CPU has no native bfloat16" in printed
    rows = json.loads((tmp_path / "benchmark.json").read_text())["measurements"]
    assert {m["precision"] for m in rows} == {"fp32"}


def test_benchmark_flops_follow_the_input_size() -> None:
    import torch

    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    # 2 FLOPs per multiply-add: 2 * 3 * 4 * 9 per output pixel
    assert measure.gflops(conv, 10) == pytest.approx(2 * 3 * 4 * 9 * 100 / 1e9)


def test_benchmark_refuses_unknown_options(capsys: pytest.CaptureFixture) -> None:
    assert main(["benchmark", TINY, "--runtimes", "tensorrt"]) == 2
    assert "--runtimes from torch, onnx" in capsys.readouterr().err
    assert main(["benchmark", TINY, "--batch-sizes", "one"]) == 2
    assert "expected numbers such as 1,32" in capsys.readouterr().err


def test_every_name_the_benchmark_scripts_import_from_headstart_exists() -> None:
    """The scripts in benchmarks/ run outside the suite: a renamed function would break them
    silently. Every ``from headstart... import name`` in them, top level or inside a function,
    must resolve."""
    import ast
    import importlib

    scripts = sorted((Path(__file__).parents[2] / "benchmarks").glob("*.py"))
    assert scripts
    checked = 0
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("headstart"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{script.name}: {node.module}.{alias.name}"
                    checked += 1
    assert checked > 10
