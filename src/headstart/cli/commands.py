"""Subcommand handlers: each turns parsed arguments into library calls and prints results."""

from __future__ import annotations

import argparse
import json

from headstart.errors import ConfigError


def train(args: argparse.Namespace) -> int:
    """``headstart train``."""
    from headstart.cli.main import TRAIN_OPTIONS
    from headstart.config import TrainConfig, load_config
    from headstart.training import train as run_training

    cfg = load_config(args.config) if args.config else TrainConfig()
    overrides = {key: getattr(args, dest) for dest, key in TRAIN_OPTIONS.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.data is not None:
        overrides["data.root"] = args.data
    if overrides.get("optim.grad_clip") == 0:
        overrides["optim.grad_clip"] = None
    if not (args.data or cfg.data.root):
        raise ConfigError(
            "ConfigError: no data folder. Pass DATA_DIR or set data.root in --config."
        )
    run_training(
        cfg.with_overrides(overrides), overwrite=args.overwrite, progress=not args.no_progress
    )
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``headstart evaluate``."""
    from headstart.evaluation import evaluate_run

    ev = evaluate_run(
        args.run,
        args.data,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    n = int(ev.confusion.sum())
    print(f"evaluated {args.run} on {n} images from {ev.source}")
    for path, reason in ev.skipped:
        print(f"  skipped {path}: {reason}")
    print(f"accuracy {ev.accuracy:.4f} ({round(ev.accuracy * n)}/{n})\n")
    print(ev.report_text)
    print(ev.confusion_text())
    print(f"\nconfusion matrix: {ev.confusion_png}")
    return 0


def predict(args: argparse.Namespace) -> int:
    """``headstart predict``; exit code 1 if any input could not be read."""
    from headstart.serve import Predictor, expand_inputs

    if args.top_k < 1:
        raise ConfigError("ConfigError: --top-k must be at least 1.")
    paths = expand_inputs(args.inputs)
    predictor = Predictor.from_run(args.run, device=args.device)
    results = predictor.predict_paths(paths, top_k=args.top_k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            if r.error:
                print(f"{r.source}: ERROR {r.error}")
                continue
            for task, pairs in r.top.items():
                shown = "  ".join(f"{label} {p:.3f}" for label, p in pairs)
                prefix = r.source if len(r.top) == 1 else f"{r.source} [{task}]"
                print(f"{prefix}: {shown}")
    return 1 if any(r.error for r in results) else 0


def backbones(args: argparse.Namespace) -> int:
    """``headstart backbones``: name, library, default weights and offline availability."""
    from headstart.backbones import DEFAULT_BACKBONE, list_backbones
    from headstart.backbones.availability import offline_status

    rows = [
        (
            s.name + (" *" if s.name == DEFAULT_BACKBONE else ""),
            s.library,
            s.default_weights,
            offline_status(s),
            s.summary,
        )
        for s in list_backbones()
    ]
    header = ("backbone", "library", "weights", "offline", "description")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    import torch

    print(
        "\n* default backbone. torchvision weights are cached in "
        f"{torch.hub.get_dir()}/checkpoints; copy a file there to use it offline.\n"
        "Every backbone also accepts --weights none (random init) and --weights PATH "
        "(a local .safetensors/.pth file)."
    )
    return 0
