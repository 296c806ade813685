"""``headstart benchmark``: what each backbone costs on this machine (latency p50/p95 and
throughput per runtime, precision and batch size; parameters, FLOPs, peak memory), as a
table, ``benchmark.json`` and ``benchmark.png``; given run folders (or a compare folder of
them), their accuracy against latency, to pick the backbone for a deployment."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from headstart.benchmark.measure import (
    PRECISIONS,
    RUNTIMES,
    Measurement,
    measure_backbone,
    unsupported,
)
from headstart.errors import ConfigError


@dataclass
class Benchmark:
    """The measurements, and the accuracy of each run given."""

    rows: list[Measurement]
    runs: list[dict] = field(default_factory=list)  # {"run", "backbone", "val_acc"}

    def table(self) -> str:
        """One line per measurement."""
        head = (
            f"{'backbone':<22} {'runtime':<7} {'prec':<5} {'batch':>5} {'p50 ms':>8} "
            f"{'p95 ms':>8} {'img/s':>7} {'params':>7} {'GFLOPs':>7} {'peak MB':>8}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.backbone:<22} {r.runtime:<7} {r.precision:<5} {r.batch:>5} {r.p50_ms:>8.1f} "
                f"{r.p95_ms:>8.1f} {r.images_per_s:>7.1f} {r.params / 1e6:>6.1f}M "
                f"{r.gflops:>7.2f} {r.peak_mb:>8.0f}"
            )
        random = sorted({r.backbone for r in self.rows if r.weights != "pretrained"})
        if random:
            lines.append(f"timed with random weights (not on this machine): {', '.join(random)}")
        for run in self.runs:
            lat = self.fastest(run["backbone"])
            where = (
                f", {lat.p50_ms:.1f} ms/image ({lat.runtime} {lat.precision}, batch " if lat else ""
            )
            lines.append(
                f"run {run['run']}: {run['backbone']}, val_acc {run['val_acc']:.2%}"
                + (f"{where}{lat.batch})" if lat else "")
            )
        return "\n".join(lines)

    def fastest(self, backbone: str) -> Measurement | None:
        """The lowest smallest-batch p50 latency measured for ``backbone`` in fp32 (any
        runtime): the precision a run's accuracy was measured in (int8 can cost points)."""
        smallest = min(m.batch for m in self.rows)
        ones = [r for r in self.rows if r.backbone == backbone and r.batch == smallest
                and r.precision == "fp32"]  # fmt: skip
        return min(ones, key=lambda r: r.p50_ms) if ones else None

    def write(self, out: Path) -> tuple[Path, Path]:
        """``benchmark.json`` and ``benchmark.png`` in ``out``."""
        from headstart.plots import plot_benchmark

        out.mkdir(parents=True, exist_ok=True)
        path = out / "benchmark.json"
        path.write_text(json.dumps({"measurements": [r.to_dict() for r in self.rows],
                                    "runs": self.runs}, indent=1))  # fmt: skip
        points = [(run["run"], self.fastest(run["backbone"]), run["val_acc"]) for run in self.runs]
        return path, plot_benchmark(self.rows, [(n, m.p50_ms, a) for n, m, a in points if m],
                                    out / "benchmark.png")  # fmt: skip


def read_runs(paths: Sequence[str]) -> list[dict]:
    """Run folders, or folders holding run folders (``compare``/``cv`` outputs): the backbone
    and best validation accuracy of each, from its manifest."""
    from headstart.training import read_manifest

    found = []
    for given in paths:
        p = Path(given)
        folders = [p] if (p / "manifest.json").is_file() else sorted(
            d for d in p.glob("*") if (d / "manifest.json").is_file())  # fmt: skip
        if not folders:
            raise ConfigError(
                f"ConfigError: --runs {p}: no run folder (manifest.json) there or one level "
                "below. Pass the --out of `headstart train` or `headstart compare`."
            )
        for d in folders:
            m = read_manifest(d)
            found.append({"run": str(d), "backbone": m["backbone"],
                          "val_acc": float(m["metrics"]["val_acc"])})  # fmt: skip
    return found


def run_benchmark(
    backbones: Sequence[str],
    runtimes: Sequence[str] = RUNTIMES,
    precisions: Sequence[str] = ("fp32",),
    batches: Sequence[int] = (1, 32),
    runs: Sequence[str] = (),
    echo=print,
) -> Benchmark:
    """Measure every backbone named or used by ``runs``."""
    bad = [r for r in runtimes if r not in RUNTIMES]
    known = {p for ps in PRECISIONS.values() for p in ps}
    wrong = [p for p in precisions if p not in known]
    if bad or wrong or not batches or min(batches) < 1:
        raise ConfigError(
            f"ConfigError: --runtimes from {', '.join(RUNTIMES)}, --precision from "
            f"{', '.join(sorted(known))}, --batch-sizes positive integers (got "
            f"{list(runtimes)}, {list(precisions)}, {list(batches)})."
        )
    given = read_runs(runs)
    names = list(dict.fromkeys([*backbones, *(r["backbone"] for r in given)]))
    for pair, why in unsupported(list(runtimes), list(precisions)).items():
        echo(f"skipped {pair}: {why}")
    rows: list[Measurement] = []
    for name in names:
        echo(f"{name}: timing {', '.join(runtimes)} x {', '.join(precisions)} ...")
        rows += measure_backbone(name, list(runtimes), list(precisions), list(batches))
    return Benchmark(rows, given)


__all__ = ["Benchmark", "Measurement", "read_runs", "run_benchmark"]
