"""Subcommand handlers: each turns parsed arguments into library calls and prints results."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.config import TrainConfig
    from headstart.evaluation.evaluate import Evaluation, TaskEvaluation


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < ``--config`` YAML < command-line options."""
    from headstart.cli.main import TRAIN_OPTIONS
    from headstart.config import TrainConfig, load_config

    cfg = load_config(args.config) if args.config else TrainConfig()
    overrides = {key: getattr(args, dest, None) for dest, key in TRAIN_OPTIONS.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.data is not None:
        overrides["data.root"] = args.data
    if overrides.get("optim.grad_clip") == 0:
        overrides["optim.grad_clip"] = None
    if not (args.data or cfg.data.root or overrides.get("data.labels") or cfg.data.labels):
        raise ConfigError(
            "ConfigError: no data. Pass DATA_DIR, or --labels CSV --images-root DIR, or set "
            "data.root in --config."
        )
    return cfg.with_overrides(overrides)


def train(args: argparse.Namespace) -> int:
    """``headstart train`` (``--resume RUN_DIR``: continue an interrupted run)."""
    from headstart.training import train as run_training
    from headstart.training.train import resume_run

    if args.resume:
        if args.data or args.config or args.labels:
            raise ConfigError(
                "ConfigError: --resume continues a run with its own config and data; pass "
                "only --resume RUN_DIR."
            )
        resume_run(args.resume, progress=not args.no_progress)
        return 0
    cfg = config_from_args(args)
    extra = None
    if args.budget and cfg.strategy.name != "auto":
        raise ConfigError(
            "ConfigError: --budget applies to --strategy auto; add it or drop --budget."
        )
    if cfg.strategy.name == "auto":  # choose by evidence, then train the pick
        from headstart.recommend.ranking import PICKS
        from headstart.recommend.run import parse_budget
        from headstart.recommend.run import recommend as gather
        from headstart.training.members import check_choices, member_config

        check_choices(cfg, PICKS, "--strategy auto")

        progress = not args.no_progress
        budget = parse_budget(args.budget) if args.budget else None
        names = [args.backbone] if args.backbone else None
        rec = gather(cfg, names, progress=progress, budget_s=budget)
        for line in rec.reasons():
            print(line)
        print(f"auto: training with {rec.train_args()}\n")
        extra = {"recommendation": rec.to_dict()}
        cfg, note = member_config(cfg, rec.overrides())
        if note:
            print(note)
    run_training(cfg, overwrite=args.overwrite, progress=not args.no_progress, extra=extra)
    return 0


def _data_args(cfg: TrainConfig, split: bool = True) -> str:
    """The data options of ``cfg`` as a command line would give them: the data, its images
    root and tasks and, with ``split``, a validation fraction or seed other than the default
    (what decides the held-out images)."""
    import shlex

    from headstart.config import TrainConfig

    data, default = cfg.data, TrainConfig()
    args = ["--labels", data.labels] if data.labels else [data.root]
    if data.labels and data.images_root:
        args += ["--images-root", data.images_root]
    if data.tasks:
        args += ["--tasks", ",".join(data.tasks)]
    if data.group:
        args += ["--group", data.group]
    if split and data.val_fraction != default.data.val_fraction:
        args += ["--val-fraction", f"{data.val_fraction:g}"]
    if split and cfg.seed != default.seed:
        args += ["--seed", str(cfg.seed)]
    return shlex.join(args)


def lr_find(args: argparse.Namespace) -> int:
    """``headstart lr-find``: the range test's curve, pick and rule; no run is trained."""
    from datetime import datetime
    from pathlib import Path

    from headstart.training.setup import (
        build_model,
        find_lr,
        prepare_data,
        resolve_config,
        scale_lr,
    )  # fmt: skip

    args.strategy = args.strategy or "finetune"
    cfg = resolve_config(config_from_args(args))
    out = Path(args.out or f"runs/lr-find-{datetime.now():%Y%m%d-%H%M%S}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"ConfigError: cannot create --out {out}: {e.strerror}.") from None
    progress = not args.no_progress
    ready = prepare_data(cfg, progress=progress)
    cfg = scale_lr(cfg, ready.split)  # the model line shows the default the pick is set against
    built = build_model(cfg, ready, progress=progress)
    test = find_lr(cfg, ready, built, progress=progress, out=out)
    (out / "lr_find.json").write_text(json.dumps(test.to_dict(), indent=1))
    print(
        f"\ntrain with it (and the other options given here): headstart train {_data_args(cfg)} "
        f"--strategy {ready.plan.name} --lr {test.pick:.2g}   (or --lr auto)"
    )
    print(f"wrote {out / 'lr_find.png'} and {out / 'lr_find.json'}")
    return 0


def benchmark(args: argparse.Namespace) -> int:
    """``headstart benchmark``: the table, benchmark.json and benchmark.png."""
    from datetime import datetime
    from pathlib import Path

    from headstart.backbones.availability import offline_status
    from headstart.backbones.registry import list_backbones
    from headstart.benchmark import run_benchmark

    try:
        batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(
            f"ConfigError: --batch-sizes {args.batch_sizes!r}; expected numbers such as 1,32."
        ) from None
    names = args.backbones or (
        [] if args.runs else
        [s.name for s in list_backbones() if offline_status(s).startswith("yes")]
    )  # fmt: skip
    result = run_benchmark(names, args.runtimes, args.precision, batches, args.runs)
    print()
    print(result.table())
    out = Path(args.out or f"runs/benchmark-{datetime.now():%Y%m%d-%H%M%S}")
    json_path, png_path = result.write(out)
    print(f"wrote {json_path} and {png_path}")
    return 0


def recommend(args: argparse.Namespace) -> int:
    """``headstart recommend``: the candidates' evidence, the pick and its reasons."""
    from datetime import datetime
    from pathlib import Path

    from headstart.recommend.run import parse_budget
    from headstart.recommend.run import recommend as gather

    cfg = config_from_args(args)
    out = Path(args.out or f"runs/recommend-{datetime.now():%Y%m%d-%H%M%S}")
    budget = parse_budget(args.budget) if args.budget else None
    rec = gather(cfg, args.backbones, progress=not args.no_progress, budget_s=budget)
    print()
    print(rec.table())
    print()
    for line in rec.reasons():
        print(line)
    print(
        f"\ntrain it: headstart train {_data_args(cfg)} {rec.train_args()}   (or --strategy auto)"
    )
    json_path, png_path = rec.write(out)
    print(f"wrote {json_path} and {png_path}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """``headstart compare``: one table, compare.json and compare.png."""
    from datetime import datetime

    from headstart.evaluation.compare import compare_strategies, parse_strategies

    strategies = parse_strategies(args.strategies)
    if args.cv is not None:
        return _cross_validate(args, strategies, args.cv, 1, False, "compare-cv")
    if args.patience is not None:
        raise ConfigError(
            "ConfigError: compare trains every strategy for all its epochs (the same budget "
            "each, no early stop); leave out --patience."
        )
    cfg = config_from_args(args)
    out = args.out or f"runs/compare-{datetime.now():%Y%m%d-%H%M%S}"
    result = compare_strategies(
        cfg, strategies, out, overwrite=args.overwrite, progress=not args.no_progress,
        resume=args.resume,
    )  # fmt: skip
    print(f"\ncomparison on {cfg.data.root}, {cfg.optim.epochs} epochs each, seed {cfg.seed}:\n")
    print(result.table())
    print()
    for line in result.verdict:
        print(line)
    print(f"\nwrote {result.json_path} and {result.png_path}")
    return 0


def cv(args: argparse.Namespace) -> int:
    """``headstart cv``: per-fold accuracy, mean, std and 95% CI per strategy."""
    from headstart.evaluation.compare import parse_strategies

    strategies = parse_strategies(",".join(args.strategies or ["probe"]))
    return _cross_validate(args, strategies, args.folds, args.repeats, args.keep_test, "cv")


def _cross_validate(
    args: argparse.Namespace,
    strategies: list[str],
    folds: int,
    repeats: int,
    keep_test: bool,
    prefix: str,
) -> int:
    """Run and print a cross-validation (``cv``, and ``compare --cv K``)."""
    from datetime import datetime

    from headstart.evaluation.cv import cross_validate

    if folds < 2 or repeats < 1:
        raise ConfigError("ConfigError: --folds/--cv must be at least 2, --repeats at least 1.")
    if args.patience is not None or args.keep == "best":
        raise ConfigError(
            "ConfigError: cross-validation trains every fold to its last epoch and keeps it "
            "(an early stop or a best epoch would be chosen on the images the fold is scored "
            "on); leave out --patience and --keep best."
        )
    cfg = config_from_args(args)
    out = args.out or f"runs/{prefix}-{datetime.now():%Y%m%d-%H%M%S}"
    result = cross_validate(
        cfg, strategies, folds, repeats, keep_test=keep_test, out_dir=out,
        overwrite=args.overwrite, progress=not args.no_progress, resume=args.resume,
    )  # fmt: skip
    print(
        f"\n{folds}-fold cross-validation x {repeats} on {_data_args(cfg, split=False)} "
        f"({result.n} images), {cfg.optim.epochs} epochs per fold, seed {cfg.seed}:\n"
    )
    print(result.table())
    print("\n95% CI: Student-t over folds, for the mean fold accuracy (final epoch of each).")
    for line in result.verdict():
        print(line)
    for row in result.rows:
        for task, errors in row.label_errors.items():
            where = f"{row.strategy}" + (f", task {task}" if len(row.label_errors) > 1 else "")
            print(
                f"\nlikely label errors ({where}): {len(errors)} images the model of the fold "
                "that held them out assigns to another class:"
            )
            print("\n".join(_listed([s.line() for s in errors])))
    print(f"\nwrote {out}/cv.json")
    return 0


def inspect(args: argparse.Namespace) -> int:
    """``headstart inspect``: stages, parameter counts, trainable set and LRs of a strategy."""
    from headstart.backbones import create_backbone
    from headstart.config import StrategyConfig, TrainConfig, check_ranges
    from headstart.finetune import DEFAULTS
    from headstart.finetune.describe import describe, format_table
    from headstart.finetune.scaling import rule_line, scaled_lr
    from headstart.model import DEFAULT_TASK, Classifier
    from headstart.training.setup import plan_for
    from headstart.training.unfreeze import AUTO_STAGE

    strategy = StrategyConfig(
        name=args.strategy, lr=args.lr, head_lr_mult=args.head_lr_mult, bn=args.bn,
        unfreeze_from=args.unfreeze_from, lr_decay=args.lr_decay, stage_lr=args.stage_lr,
        unfreeze_every=args.unfreeze_every, probe_epochs=args.probe_epochs,
    )  # fmt: skip
    cfg = TrainConfig(strategy=strategy).with_overrides({"optim.epochs": args.epochs})
    check_ranges(cfg)
    backbone = create_backbone(args.backbone, "none")  # architecture only: no download
    plan = plan_for(cfg, backbone)
    model = Classifier(
        backbone.module, backbone.num_features, {DEFAULT_TASK: args.classes}, 0.0,
        backbone.spec.family,
    )  # fmt: skip
    lr = args.lr if args.lr is not None else DEFAULTS[plan.name].lr
    if lr is None:
        print(f"default lr: {rule_line(args.train_images)}")
        lr = scaled_lr(args.train_images)
    print(
        f"{args.backbone}: {len(backbone.stages())} backbone stages + head "
        f"({args.classes} classes); strategy {plan.name}, base lr {lr:g}, bn {plan.bn}, "
        f"{args.epochs} epochs\n"
    )
    print(format_table(describe(model, plan, lr), plan))
    if plan.name == "partial" and args.unfreeze_from == AUTO_STAGE:
        print(
            f"\n--unfreeze-from auto: train chooses the stage from the data (the earliest the "
            f"multi-layer probe reads); shown above: the default, {plan.first_trainable}"
        )
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``headstart evaluate`` (``--calibrate``: fit and store a temperature first;
    ``--thresholds``: then pick and store the two-class tasks' decision thresholds)."""
    from headstart.evaluation import evaluate_run
    from headstart.training import load_run

    run = load_run(args.run)  # one load, kept up to date as --calibrate and --thresholds store
    logits = None  # one validation pass serves --calibrate, --thresholds and the evaluation
    if args.calibrate or args.thresholds == "f1":
        from headstart.evaluation.evaluate import raw_validation_logits

        logits = raw_validation_logits(run, args.device,
                                       batch_size=args.batch_size,
                                       progress=not args.no_progress)  # fmt: skip
    if args.calibrate:
        from headstart.evaluation.temperature import calibrate_run

        fits = calibrate_run(run, batch_size=args.batch_size, device=args.device,
                             progress=not args.no_progress, scores=logits)  # fmt: skip
        for fit in fits:
            print(fit.line())
            if fit.ece_after >= fit.ece_before:
                print(
                    "  note: the cross-fitted ECE did not fall: the model was already about as "
                    "well calibrated as a temperature can make it (the NLL still fell)."
                )
        print(
            f"stored in {args.run}/manifest.json: evaluate, predict and serve apply it; "
            "export again to carry it into an ONNX file.\n"
        )
    if args.thresholds:
        from headstart.evaluation.thresholds import threshold_run

        fits = threshold_run(run, args.thresholds, batch_size=args.batch_size,
                             device=args.device, progress=not args.no_progress,
                             logits=logits)  # fmt: skip
        for fit in fits:
            print(fit.line())
        kept = [f.task for f in fits if f.kept]
        print(
            f"stored in {args.run}/manifest.json ({', '.join(kept)}): evaluate, predict and "
            "serve decide with them; export again to carry them into an ONNX file.\n"
            if kept
            else f"no decision thresholds in {args.run}/manifest.json: each task decides its "
            "most probable class.\n"
        )
    ev = evaluate_run(
        run,
        args.data,
        images_root=args.images_root,
        tta=args.tta,
        analysis=not args.no_analysis,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        validation_logits=logits,
    )
    print(f"evaluated {args.run} on {ev.single.n} images from {ev.source}")
    if ev.tta:
        print(f"test-time augmentation: {ev.tta}, softmax averaged")
    for path, reason in ev.skipped:
        print(f"  skipped {path}: {reason}")
    for task, t in ev.tasks.items():
        print(evaluation_text(t, "" if len(ev.tasks) == 1 else f"task {task}: "))
    if len(ev.tasks) > 1:
        with_auc = sum(t.roc is not None for t in ev.tasks.values())
        auc = f", mean ROC AUC {ev.mean_auc:.4f} over {with_auc} tasks" if with_auc else ""
        print(f"mean task accuracy {ev.accuracy:.4f}{auc}\n")
    print(analysis_text(ev))
    return 0


def evaluation_text(t: TaskEvaluation, name: str = "") -> str:
    """One task's evaluation as the terminal shows it."""
    from headstart.evaluation.confusions import MANY_CLASSES, confused_text, weakest_report

    lo, hi = t.ci
    correct = round(t.accuracy * t.n)
    lines = [f"{name}accuracy {t.accuracy:.4f} ({correct}/{t.n}; 95% CI {lo:.3f}-{hi:.3f})"]
    if t.threshold is not None:
        lines.append(
            f"decisions: {t.classes[1]!r} when its probability is at least {t.threshold:.3f} "
            "(evaluate --thresholds), else the other class"
        )
    if t.roc is not None:
        lines.append(f"{t.roc.text()}; curve: {t.pngs['roc']}")
    if t.without_tta:
        before = t.without_tta
        delta = correct - round(before["accuracy"] * t.n)
        lines.append(
            f"  without TTA {before['accuracy']:.4f} ({delta:+d} images with it); "
            f"ECE {before['ece']:.4f} without, {t.calibration.ece:.4f} with"
        )
    if len(t.classes) > MANY_CLASSES:
        lines += ["", weakest_report(t.report_text, t.report, t.classes), ""]
        lines += [confused_text(t.confusion, t.classes), ""]
    else:
        lines += ["", t.report_text, t.confusion_text(), "", t.confusion_text(normalised=True)]
        lines.append("")
    lines.append(f"confusion matrix: {t.pngs['confusion']}")
    lines.append(
        f"calibration: ECE {t.calibration.ece:.4f} ({len(t.calibration.counts)} bins of top-1 "
        f"confidence); reliability diagram: {t.pngs['reliability']}"
    )
    lines.append(f"top losses ({len(t.top_losses)} most confidently wrong): {t.pngs['top_losses']}")
    lines += [f"  {s.line()}" for s in t.top_losses]
    if t.label_errors is not None:
        how = (
            "a head fitted without them (3 folds)"
            if t.label_errors_out_of_fold
            else "the model, after training on them,"
        )
        lines.append(
            f"likely label errors: {len(t.label_errors)} training images {how} assigns to "
            "another class"
            + (":" if t.label_errors_out_of_fold else " (in-sample; `cv` scores them out of fold):")
        )
        lines += _listed([s.line() for s in t.label_errors])
    return "\n".join(lines) + "\n"


def _listed(items: list[str], most: int = 20) -> list[str]:
    """``items`` indented, the first ``most`` of them with a count of the rest (which
    ``evaluation.json`` holds), or "none"."""
    more = [f"  ... and {len(items) - most} more (all in evaluation.json)"]
    return [f"  {s}" for s in items[:most]] + (more if len(items) > most else []) or ["  none"]


def analysis_text(ev: Evaluation) -> str:
    """Near-duplicates and files the scan left out, as the terminal shows them."""
    from headstart.evaluation.analysis import DUPLICATE_DISTANCE

    lines = []
    if ev.duplicates is not None:
        lines.append(
            f"near-duplicates between the {ev.train_images} training images and the evaluated "
            f"ones ({len(ev.duplicates)} pairs within {DUPLICATE_DISTANCE} of 64 pHash bits):"
        )
        lines += _listed([f"{d.train} ~ {d.evaluated} ({d.distance})" for d in ev.duplicates])
    if ev.train_skipped:
        lines.append("left out of training by the scan:")
        lines += [f"  {p}: {r}" for p, r in ev.train_skipped]
    return "\n".join(lines)


def report(args: argparse.Namespace) -> int:
    """``headstart report``: one self-contained HTML page about a run."""
    from headstart.report import write_report

    path = write_report(args.run, args.out, progress=not args.no_progress)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, images embedded)")
    return 0


def require(extra: str, *modules: str) -> None:
    """A ConfigError naming the pip extra when an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"ConfigError: this command needs {', '.join(missing)}; install them with "
            f"pip install 'headstart[{extra}]'."
        )


def export(args: argparse.Namespace) -> int:
    """``headstart export``: write, check and verify; exit 1 with the numbers on mismatch."""
    require("export", "onnx", "onnxruntime")
    from headstart.export import export_run

    results = export_run(
        args.run,
        args.format,
        opset=args.opset,
        quantize=args.quantize,
        out=args.out,
        images=args.images,
        progress=not args.no_progress,
    )
    base = results[0]
    for r in results:
        print(f"wrote {r.path} ({r.megabytes:.1f} MB) and {r.sidecar.name}")
        print("\n".join(r.verification.lines()))
    if len(results) > 1:
        q = results[1].verification
        t_base, t_q = (v.ms_per_image["onnxruntime"] for v in (base.verification, q))
        print(
            f"int8 vs float32: {results[1].megabytes:.1f} vs {base.megabytes:.1f} MB, "
            f"{t_q:.1f} vs {t_base:.1f} ms/image"
        )
    return 0


def serve(args: argparse.Namespace) -> int:
    """``headstart serve``: the prediction server, until interrupted."""
    require("serve", "fastapi", "uvicorn", "multipart", "onnxruntime")
    from headstart.runtime.engines import load_engine
    from headstart.serve.app import ServeConfig, serve

    engine = load_engine(args.model)  # a bad path or file fails here, before anything listens
    config = ServeConfig(
        model=args.model,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_file_mb=args.max_file_mb,
        max_files=args.max_files,
    )
    print(
        f"serving {engine.meta['model_id']} ({engine.name}) on http://{args.host}:{args.port}/ "
        f"({args.workers} worker(s))"
    )
    serve(config, args.host, args.port, args.workers, engine=engine)
    return 0


def predict(args: argparse.Namespace) -> int:
    """``headstart predict``; exit code 1 if any input could not be read."""
    from pathlib import Path

    from headstart.runtime.predictions import expand_inputs
    from headstart.text import display

    paths = expand_inputs(args.inputs)
    from headstart.runtime.predictor import Predictor  # torch only for a run folder

    device = "cpu" if Path(args.run).suffix == ".onnx" else args.device
    predictor = Predictor.load(args.run, device=device)
    results = predictor.predict_paths(paths, top_k=args.top_k, tta=args.tta)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            source = display(r.source)
            if r.error:
                print(f"{source}: ERROR {display(r.error)}")
                continue
            for task, pairs in r.top.items():
                shown = "  ".join(f"{label} {p:.3f}" for label, p in pairs)
                prefix = source if len(r.top) == 1 else f"{source} [{task}]"
                decided = f"  {r.decisions[task].text()}" if task in r.decisions else ""
                print(f"{prefix}: {shown}{decided}")
    return 1 if any(r.error for r in results) else 0


def cache(args: argparse.Namespace) -> int:
    """``headstart cache``: entries and disk use of each cache kind (``--clear``: delete them)."""
    from headstart.cache import cache_root
    from headstart.cache.usage import clear, human_size, usage
    from headstart.tables import text_table

    root = cache_root(args.cache_dir)
    if args.clear:
        freed = clear(root)
        print(f"cleared {root}: {human_size(freed)} freed; runs recompute what they need.")
        return 0
    kinds = usage(root)
    total = ("total", "", f"{sum(k.entries for k in kinds):,}",
             human_size(sum(k.bytes for k in kinds)))  # fmt: skip
    print(f"cache {root}" + ("" if root.is_dir() else " (not created yet)"))
    print(text_table([("kind", "parts", "entries", "size"), *(k.row() for k in kinds), total]))
    print(
        "\nEverything here is recomputed when next needed: `headstart cache --clear` frees it "
        "(--cache-dir DIR or $HEADSTART_CACHE to keep it elsewhere)."
    )
    return 0


def backbones(args: argparse.Namespace) -> int:
    """``headstart backbones``: name, library, default weights and offline availability."""
    from headstart.backbones import DEFAULT_BACKBONE, list_backbones
    from headstart.backbones.availability import offline_status
    from headstart.tables import text_table

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
    print(text_table([header, *rows], numeric=False))
    import torch

    print(
        "\n* default backbone. torchvision weights are cached in "
        f"{torch.hub.get_dir()}/checkpoints; copy a file there to use it offline.\n"
        "Every backbone also accepts --weights none (random init) and --weights PATH "
        "(a local .safetensors/.pth file)."
    )
    return 0
