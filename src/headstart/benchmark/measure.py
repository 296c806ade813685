"""What one backbone costs where it is deployed: latency percentiles and throughput per
runtime, precision and batch size, parameters, FLOPs (torch's own counter) and peak memory.

Latency does not depend on the weights' values, so a backbone whose weights are not on this
machine is timed with random ones (nothing is downloaded); the int8 model is calibrated on
random images for the same reason (its accuracy is a run's to report, not this one's).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.backbones import count_parameters, create_backbone
from headstart.backbones.availability import offline_status
from headstart.backbones.registry import get_spec
from headstart.errors import ConfigError
from headstart.model import Classifier
from headstart.training.device import to_device
from headstart.training.fold import fold_batchnorm
from headstart.training.precision import resolve_precision

RUNTIMES = ("torch", "onnx")
PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}
MIN_SECONDS = 1.0  # time each configuration at least this long (and MIN_ITERATIONS times)
MIN_ITERATIONS = 10


@dataclass(frozen=True)
class Measurement:
    """One backbone x runtime x precision x batch size."""

    backbone: str
    runtime: str
    precision: str
    batch: int
    p50_ms: float
    p95_ms: float
    images_per_s: float
    peak_mb: float  # resident memory gained over the process's level before loading
    params: int
    gflops: float  # per image, forward pass
    input_size: int
    weights: str  # "pretrained" or "random (not on this machine)"

    def to_dict(self) -> dict[str, Any]:
        """For ``benchmark.json``."""
        return asdict(self)


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB; None off Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def rss_mb() -> float:
    """This process's resident memory now, in MB (0 where it cannot be read)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """Peak resident memory since :func:`reset_peak`, in MB (off Linux: the process-wide
    peak ``getrusage`` reports)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource  # POSIX only

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def latencies(run: Callable[[], Any]) -> list[float]:
    """Seconds per call of ``run``: two warm-up calls, then at least ``MIN_ITERATIONS``
    calls and ``MIN_SECONDS`` of them."""
    run(), run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_ITERATIONS or time.perf_counter() - start < MIN_SECONDS:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return times


def gflops(model: torch.nn.Module, size: int) -> float:
    """Forward GFLOPs per image (multiply and add counted apart), by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def _onnx_session(model: torch.nn.Module, size: int, precision: str, folder: Path) -> Any:
    """The model exported as headstart exports (and, for int8, statically quantized)."""
    import onnxruntime as ort

    from headstart.export.graph import Exportable
    from headstart.export.write import quantize_onnx, write_onnx

    meta = {"outputs": ["class"], "preprocessing": {"input_size": size}, "tasks": {},
            "model_id": "benchmark"}  # fmt: skip
    path = write_onnx(Exportable(model), folder / "fp32.onnx", meta)
    if precision == "int8":
        rng = np.random.default_rng(0)
        calibration = [rng.standard_normal((8, 3, size, size)).astype(np.float32)]
        path = quantize_onnx(path, folder / "int8.onnx", "static", calibration)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def unsupported(runtimes: list[str], precisions: list[str]) -> dict[str, str]:
    """Requested ``runtime precision`` pairs this machine cannot run, with the reason (bf16
    in PyTorch on a CPU without it): the benchmark says so instead of leaving rows out.

    >>> unsupported(["onnx"], ["fp32", "int8"])
    {}
    """
    out = {}
    for runtime in runtimes:
        for precision in (p for p in precisions if p in PRECISIONS[runtime]):
            if runtime == "torch":
                try:
                    resolve_precision(precision, torch.device("cpu"))
                except ConfigError as e:
                    out[f"{runtime} {precision}"] = str(e).removeprefix("ConfigError: ")
    return out


def measure_backbone(
    name: str, runtimes: list[str], precisions: list[str], batches: list[int]
) -> list[Measurement]:
    """Every requested (runtime, precision, batch) the runtime supports, on the CPU."""
    spec = get_spec(name)
    here = offline_status(spec).startswith("yes")
    before = rss_mb()
    reset_peak()
    backbone = create_backbone(name, "default" if here else "none")
    model = Classifier(backbone.module, backbone.num_features, {"class": 2},
                       family=spec.family).eval()  # fmt: skip
    size = backbone.preprocessing.input_size
    params, flops = count_parameters(model), gflops(model, size)
    weights = "pretrained" if here else "random (not on this machine)"
    out = []
    for runtime in runtimes:
        for precision in (p for p in precisions if p in PRECISIONS[runtime]):
            runner = _runner(model, size, runtime, precision)
            if runner is None:
                continue
            for b in batches:
                times = latencies(runner(b))
                out.append(Measurement(
                    name, runtime, precision, b,
                    1000 * statistics.median(times), 1000 * float(np.percentile(times, 95)),
                    b / statistics.mean(times), max(0.0, peak_rss_mb() - before), params,
                    flops, size, weights,
                ))  # fmt: skip
    return out


def _runner(
    model: torch.nn.Module, size: int, runtime: str, precision: str
) -> Callable[[int], Callable[[], Any]] | None:
    """For a batch size, a call that runs one batch in ``runtime`` and ``precision``; None
    where this machine cannot run that precision (bf16 on a CPU without it)."""
    if runtime == "torch":
        try:
            autocast = resolve_precision(precision, torch.device("cpu")).autocast
        except ConfigError:
            return None
        net = to_device(copy.deepcopy(model), torch.device("cpu")).eval()
        fold_batchnorm(net)  # as predict and serve run it (ONNX Runtime folds its graph too)

        def torch_call(batch: int) -> Callable[[], Any]:
            x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

            def run() -> None:
                with torch.inference_mode(), autocast():
                    net(x)

            return run

        return torch_call
    session = _onnx_session(model, size, precision, Path(tempfile.mkdtemp(prefix="hs-bench-")))
    name = session.get_inputs()[0].name

    def onnx_call(batch: int) -> Callable[[], Any]:
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        return lambda: session.run(None, {name: x})

    return onnx_call
