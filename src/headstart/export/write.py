"""Writing the export files: ONNX (checked by ``onnx.checker``, metadata in the file and in
a JSON sidecar), a torch.export program, and ONNX Runtime's dynamic int8 quantization."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.errors import ExportError
from headstart.export.graph import Exportable, static_padding
from headstart.runtime.onnx import INPUT

MAX_BATCH = 4096  # upper bound of the dynamic batch axis for torch.export


def _example(meta: dict[str, Any]) -> torch.Tensor:
    size = meta["preprocessing"]["input_size"]
    return torch.zeros(2, 3, size, size)


def write_sidecar(path: Path, meta: dict[str, Any]) -> Path:
    """``FILE.json`` beside the export: the same metadata, readable without ONNX tools."""
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(json.dumps({**meta, "file": path.name}, indent=2))
    return sidecar


def write_onnx(module: Exportable, path: Path, meta: dict[str, Any], opset: int = 17) -> Path:
    """ONNX with a dynamic batch axis, one output per task, metadata_props set, checked.

    Uses the TorchScript-based exporter without constant folding: on tf_efficientnet_lite0
    (torch 2.14) folding produced logits 1.16 away from PyTorch's, which verification
    caught; ONNX Runtime folds constants itself when it loads the model. (The newer
    torch.export-based exporter failed to decompose this graph.)
    """
    import onnx

    outputs = meta["outputs"]
    axes = {name: {0: "batch"} for name in [INPUT, *outputs]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        example = _example(meta)
        torch.onnx.export(
            static_padding(module.eval(), example),
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=False,
            dynamo=False,
        )
    model = onnx.load(str(path))
    props = {
        "headstart": json.dumps(meta),
        "preprocessing": json.dumps(meta["preprocessing"]),
        "tasks": json.dumps(meta["tasks"]),
        "model_id": meta["model_id"],
    }
    onnx.helper.set_model_props(model, props)
    model.producer_name = "headstart"
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"ExportError: onnx.checker rejected {path}: {e}") from None
    return path


def write_program(
    module: Exportable, path: Path, meta: dict[str, Any]
) -> torch.export.ExportedProgram:
    """A torch.export program (``.pt2``) with a dynamic batch axis, metadata in the archive;
    returns the program written (verification runs it from memory: headstart never loads
    ``.pt2`` files, which can carry pickled code)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(
            module.eval(), (_example(meta),), dynamic_shapes=({0: batch},)
        )
    with warnings.catch_warnings():  # torch's own note on how it packs CPU weights
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, str(path), extra_files={"headstart.json": json.dumps(meta)})
    return program


# what static int8 quantizes: the network's compute and what lies between its convolutions.
# Not the arithmetic around it (a multi-layer probe's standard deviations and feature
# standardisation, the shape arithmetic of TF "same" padding), which is cheap, needs float's
# range, and whose scalars ONNX Runtime's histogram calibrator cannot bin.
STATIC_OPS = ("Conv", "MatMul", "Gemm", "Add", "Clip", "Relu", "Pad", "GlobalAveragePool")


def shape_arithmetic(model: Any) -> list[str]:
    """The nodes of an ONNX ``model`` that compute on tensor shapes, not on activations
    (e.g. TF "same" padding's pad amounts): they start at ``Shape`` nodes, and every one of
    their inputs is a shape value or a constant. Quantizing them would round pad amounts."""
    inits = {i.name for i in model.graph.initializer}
    shapes: set[str] = set()
    names = []
    for node in model.graph.node:  # in topological order
        inputs = [i for i in node.input if i and i not in inits]
        constant = node.op_type in ("Constant", "ConstantOfShape") and not inputs
        if node.op_type == "Shape" or (inputs and all(i in shapes for i in inputs)) or constant:
            shapes.update(node.output)
            if node.op_type not in ("Constant", "Shape"):
                names.append(node.name)
    return names


class _Batches:
    """ONNX Runtime's calibration reader over preprocessed float32 batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_onnx(
    source: Path, path: Path, mode: str = "dynamic", calibration: list[np.ndarray] | None = None
) -> Path:
    """int8 quantization with ONNX Runtime; the metadata is carried over.

    ``static``: QDQ format, weights int8 per output channel, activations uint8 with ranges
    calibrated on ``calibration`` batches of training images by the 99.999th percentile of
    each activation's histogram (outliers clipped; measured more accurate than min/max on
    both ants/bees and elpv): the u8 x s8 layout whose convolutions and matrix products run
    on VNNI's int8 kernels; only ``STATIC_OPS`` are quantized. ``dynamic``: weights
    int8, activations quantized on the fly (ConvInteger, which has no fast CPU kernel)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # per-tensor notes on the int64 padding arithmetic it skips
    try:
        if mode == "static":
            prepared = path.with_name(f".{path.stem}.pre.onnx")
            try:
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                with contextlib.redirect_stdout(io.StringIO()):  # its histogram notes
                    quantize_static(
                        str(prepared), str(path), _Batches(calibration or []),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        op_types_to_quantize=list(STATIC_OPS),
                        nodes_to_exclude=shape_arithmetic(onnx.load(str(prepared))),
                    )  # fmt: skip
            finally:
                prepared.unlink(missing_ok=True)
        else:
            quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    props = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    model = onnx.load(str(path))
    meta = json.loads(props["headstart"])
    meta["quantization"] = (
        f"static int8 (onnxruntime quantize_static, QDQ, per-channel QInt8 weights, QUInt8 "
        "activations calibrated by the 99.999th percentile on "
        f"{sum(len(b) for b in calibration or [])} training images)"
        if mode == "static"
        else "dynamic int8 (onnxruntime.quantization.quantize_dynamic, QInt8)"
    )
    props["headstart"] = json.dumps(meta)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    return path
