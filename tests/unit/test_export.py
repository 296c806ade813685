"""``headstart export``: files that carry their preprocessing and verify themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from headstart.cli.main import main
from headstart.errors import ExportError
from headstart.export import export_run, load_engine
from headstart.export.runtime import TorchEngine
from headstart.training import load_run
from tests.unit.test_multitask import _train, make_table


def test_onnx_export_verifies_and_describes_itself(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--no-progress", "export", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "top-1 agrees on 12/12 images" in out and "max |logit diff|" in out
    path = trained_run / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["headstart"])
    run = load_run(trained_run)
    assert meta["tasks"] == run.tasks and meta["outputs"] == ["class"]
    assert meta["preprocessing"]["mean"] == list(run.preprocessing.mean)
    prep = json.loads(props["preprocessing"])
    assert prep["input_size"] == run.preprocessing.input_size and prep["crop"]["mode"] == "center"
    sidecar = json.loads((trained_run / "model.onnx.json").read_text())
    assert sidecar["verification"]["passed"] and sidecar["verification"]["max_abs_diff"] <= 1e-4
    assert sidecar["model_id"] == meta["model_id"]
    # dynamic batch axis: 1 and 5 images both run, and match PyTorch
    engine, ref = load_engine(path), TorchEngine(trained_run)
    for n in (1, 5):
        x = np.random.default_rng(n).normal(size=(n, 3, 160, 160)).astype(np.float32)
        assert np.abs(engine.logits(x)["class"] - ref.logits(x)["class"]).max() < 1e-4


def test_torch_export_format_verifies(trained_run: Path) -> None:
    [result] = export_run(trained_run, "torch-export", progress=False)
    assert result.path.name == "model.pt2" and result.verification.passed
    assert json.loads(result.sidecar.read_text())["tasks"] == load_run(trained_run).tasks
    with pytest.raises(ExportError, match=r"does not load .*can run code.*ONNX export"):
        load_engine(result.path)  # a .pt2 can carry pickled code: never loaded


def test_multitask_export_has_one_output_per_task(tmp_path: Path) -> None:
    _train(make_table(tmp_path), tmp_path / "run")
    [result] = export_run(tmp_path / "run", progress=False)
    session_outputs = [o.name for o in load_engine(result.path).session.get_outputs()]
    assert session_outputs == ["colour", "size"]
    assert set(result.verification.top1_agree) == {"colour", "size"}
    assert all(n == result.verification.images for n in result.verification.top1_agree.values())


def test_a_failed_verification_keeps_nothing_and_says_the_numbers(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [good] = export_run(trained_run, progress=False)
    before = good.path.read_bytes()
    real_logits = type(load_engine(good.path)).logits

    def off_by_one(self, batch):  # an exporter bug: logits shifted for the second class
        out = real_logits(self, batch)
        return {t: v + np.array([0.0, 1.0], np.float32) for t, v in out.items()}

    monkeypatch.setattr(type(load_engine(good.path)), "logits", off_by_one)
    with pytest.raises(ExportError, match=r"does not match PyTorch[\s\S]*max \|logit diff\| 1"):
        export_run(trained_run, progress=False)
    assert good.path.read_bytes() == before  # the verified export is untouched
    assert not list(trained_run.glob(".model*"))  # no temporary left behind


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_quantized_export_reports_size_agreement_and_speed(
    trained_run: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.export as export

    monkeypatch.setattr(export, "relative_speed", lambda *a: 2.5)  # the tiny model's own
    monkeypatch.setattr(export, "accuracy_lost", lambda v: 0.0)  # speed and accuracy: noise
    base, q = export_run(trained_run, quantize=mode, progress=False)
    assert q.path.name == "model.int8.onnx" and q.verification.tolerance is None
    assert q.megabytes < base.megabytes and q.verification.speedup == 2.5
    meta = load_engine(q.path).meta
    assert meta["quantization"].startswith(mode)
    if mode == "static":  # calibrated on the run's training images, QDQ nodes in the graph
        import onnx

        assert "calibrated by the 99.999th percentile on 32 training images" in meta["quantization"]
        ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    sidecar = json.loads(q.sidecar.read_text())
    assert sidecar["verification"]["speedup"] == 2.5


def test_an_int8_model_slower_than_float32_is_not_kept(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.export as export

    monkeypatch.setattr(export, "relative_speed", lambda *a: 0.11)
    with pytest.raises(ExportError, match=r"ran at 0.11x the float32 ONNX model's speed"):
        export_run(trained_run, quantize="dynamic", progress=False)
    assert (trained_run / "model.onnx").is_file()  # the float32 export is kept
    assert not (trained_run / "model.int8.onnx").exists()
    assert not (trained_run / "model.int8.onnx.json").exists()
    monkeypatch.setattr(export, "relative_speed", lambda *a: 2.0)  # fast, but inaccurate
    monkeypatch.setattr(export, "accuracy_lost", lambda v: 0.09)
    with pytest.raises(ExportError, match=r"lost 9.0 points of accuracy \(limit 1\)"):
        export_run(trained_run, quantize="static", progress=False)
    assert not (trained_run / "model.int8.onnx").exists()


def test_a_quantizer_failure_is_an_export_error_that_keeps_the_float32_model(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization

    def fails(*args: object, **kwargs: object) -> None:  # as ORT's calibrator on a bad graph
        raise ValueError("Too many bins for data range.")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", fails)
    with pytest.raises(ExportError, match=r"static int8 quantization .* failed in ONNX Runtime"):
        export_run(trained_run, quantize="static", progress=False)
    assert (trained_run / "model.onnx").is_file() and (trained_run / "model.onnx.json").is_file()
    assert not list(trained_run.glob("*int8*")) and not list(trained_run.glob(".model*"))


def test_the_speed_verification_prints_is_the_typical_batch_not_a_stall(
    trained_run: Path,
) -> None:
    import time

    from headstart.evaluation.sources import eval_samples
    from headstart.export.verify import verify

    reference = TorchEngine(trained_run)

    class Stalls:  # the same model; its second batch stalls (a shared machine's hiccup)
        name, meta, calls = "stalls", reference.meta, 0

        def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            self.calls += 1
            time.sleep(0.6 if self.calls == 2 else 0.0)
            return reference.logits(batch)

    samples, _, _ = eval_samples(reference.run, None)
    v = verify(reference, Stalls(), samples, batch_size=3, progress=False)
    assert len(samples) == 12 and v.passed
    assert v.seconds["stalls"] > 0.6  # the total carries the stall ...
    assert v.ms_per_image["stalls"] < 100  # ... the typical batch does not (0.6 s / 3 images)
    assert "(the median batch of 3, this machine)" in v.lines()[-1]
    assert v.to_dict()["ms_per_image"] == v.ms_per_image


def test_accuracy_lost_reads_labels_or_agreement() -> None:
    from headstart.export import Verification, accuracy_lost

    labelled = Verification(100, 0.1, {"a": 97, "b": 100}, {"a": (0.9, 0.88), "b": (0.8, 0.81)})
    assert accuracy_lost(labelled) == pytest.approx(0.02)
    unlabelled = Verification(100, 0.1, {"a": 97}, {})
    assert accuracy_lost(unlabelled) == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "torch-export", "--quantize", "dynamic"], "needs --format onnx"),
        (["--images", "/nonexistent.jpg"], "does not exist"),
    ],
)
def test_export_errors_are_clear(
    trained_run: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--no-progress", "export", str(trained_run), *args]) != 0
    assert message in capsys.readouterr().err


def test_loading_a_corrupt_or_foreign_export_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="cannot be loaded by ONNX Runtime"):
        load_engine(bad)
    foreign = tmp_path / "foreign.onnx"
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "foreign", [x], [y])
    onnx.save(
        h.make_model(graph, ir_version=8, opset_imports=[h.make_opsetid("", 17)]), str(foreign)
    )
    with pytest.raises(ExportError, match="no headstart metadata"):
        load_engine(foreign)


def test_same_padding_is_exported_as_constants_with_the_same_numbers(tmp_path: Path) -> None:
    import torch
    from timm.layers import Conv2dSame

    from headstart.export.graph import static_padding

    class Chain(torch.nn.Module):  # calls its convolutions from a plain list, as taps do
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(Conv2dSame(3, 4, 3, 2), Conv2dSame(4, 4, 5, 2))
            self.chain = list(self.body)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv in self.chain:
                x = conv(x)
            return x

    module = Chain()
    x = torch.randn(2, 3, 33, 30)
    fixed = static_padding(module.eval(), x[:1])
    assert all(type(m) is Conv2dSame for m in module.body)  # the original is untouched
    assert not any(type(m) is Conv2dSame for m in fixed.modules())
    assert torch.equal(fixed(x), module(x))  # the same numbers at that size, any batch
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(fixed, (x,), str(path), input_names=["x"], dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Shape" not in ops and "Ceil" not in ops  # no shape arithmetic left


def test_shape_arithmetic_is_found_and_left_in_float(tmp_path: Path) -> None:
    import torch
    from timm.layers import Conv2dSame

    from headstart.export.write import shape_arithmetic

    module = torch.nn.Sequential(Conv2dSame(3, 4, 3, stride=2), torch.nn.ReLU6()).eval()
    path = tmp_path / "same.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, 33, 33),), str(path), input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)  # fmt: skip
    model = onnx.load(str(path))
    graph = model.graph
    excluded = set(shape_arithmetic(model))
    ops = {n.op_type for n in graph.node if n.name in excluded}
    assert {"Ceil", "Sub"} <= ops  # the pad amounts' arithmetic (Conv2dSame's dynamic padding)
    assert not ops & {"Conv", "Pad"}  # the activations' own path stays quantizable
