"""``headstart`` entry point: builds the parser, runs a subcommand, turns errors into messages."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence

from headstart.allocator import tune_allocator
from headstart.cli import commands
from headstart.cli.crash import crash_message, debugging
from headstart.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    StrategyConfig,
    TrainConfig,
    choices,
)
from headstart.errors import ConfigError, HeadstartError, Interrupted
from headstart.strategies import STRATEGIES

# option dest -> dotted TrainConfig key
TRAIN_OPTIONS: dict[str, str] = {
    "backbone": "model.backbone",
    "weights": "model.weights",
    "dropout": "model.dropout",
    "drop_path": "model.drop_path",
    "layers": "model.layers",
    "image_size": "model.image_size",
    "crop_pct": "model.crop_pct",
    "strategy": "strategy.name",
    "lr": "strategy.lr",
    "head_lr_mult": "strategy.head_lr_mult",
    "bn": "strategy.bn",
    "unfreeze_from": "strategy.unfreeze_from",
    "lr_decay": "strategy.lr_decay",
    "stage_lr": "strategy.stage_lr",
    "unfreeze_every": "strategy.unfreeze_every",
    "probe_epochs": "strategy.probe_epochs",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "accumulate": "optim.accumulate",
    "weight_decay": "optim.weight_decay",
    "warmup_epochs": "optim.warmup_epochs",
    "warm_head": "strategy.warm_head",
    "label_smoothing": "optim.label_smoothing",
    "grad_clip": "optim.grad_clip",
    "patience": "optim.patience",
    "ema": "optim.ema",
    "mixup": "optim.mixup",
    "cutmix": "optim.cutmix",
    "val_fraction": "data.val_fraction",
    "color_jitter": "data.color_jitter",
    "augment": "data.augment",
    "sampler": "data.sampler",
    "workers": "data.num_workers",
    "cache": "data.cache",
    "cache_dir": "data.cache_dir",
    "cached_views": "data.cached_views",
    "labels": "data.labels",
    "images_root": "data.images_root",
    "tasks": "data.tasks",
    "group": "data.group",
    "task_weights": "optim.task_weights",
    "class_weights": "optim.class_weights",
    "monitor": "optim.monitor",
    "keep": "optim.keep",
    "seed": "seed",
    "device": "device",
    "precision": "precision",
    "compile": "compile",
    "grad_checkpointing": "grad_checkpointing",
    "log": "log",
    "out": "out",
}


def name_values_arg(form: str, example: str) -> Callable[[str], dict[str, float]]:
    """An argparse type parsing ``a=1,b=2`` into a dict; ``form``/``example`` go in errors."""

    def parse(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for item in filter(None, (t.strip() for t in text.split(","))):
            name, sep, value = item.partition("=")
            try:
                if not sep:
                    raise ValueError
                out[name.strip()] = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {form}[,{form}...], e.g. {example}; got {item!r}"
                ) from None
        return out

    return parse


def bounded(kind: type[int] | type[float], low: float, high: float | None = None) -> Callable:
    """An argparse type: a number of ``kind`` from ``low`` to ``high`` (a usage error, exit 2,
    otherwise). Training options are checked in ``config.RANGES`` instead: YAML sets them too.
    """
    what = "a whole number" if kind is int else "a number"
    span = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
        if not (value >= low and (high is None or value <= high)):  # NaN fails too
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what} {span}")
        return value

    return parse


stage_lr_arg = name_values_arg("STAGE=MULT", "layer3=0.1,layer4=1,head=10")
task_weights_arg = name_values_arg("TASK=WEIGHT", "type=1,defect=2")


def lr_arg(text: str) -> float | str:
    """``--lr``: a number or ``auto`` (its range is checked with the others, ``RANGES``)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or auto") from None


def names_arg(form: str, example: str) -> Callable[[str], list[str]]:
    """An argparse type parsing ``a,b`` into a list of names; ``form``/``example`` go in
    errors."""

    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"expected {form}[,{form}...], e.g. {example}")
        return names

    return parse


tasks_arg = names_arg("TASK", "type,defect")


def add_strategy_options(p: argparse.ArgumentParser) -> None:
    """The strategy options shared by train, compare and inspect."""
    p.add_argument("--head-lr-mult", type=float, help="head LR = lr x this (fine-tunes: 100)")
    p.add_argument(
        "--bn", choices=choices(StrategyConfig, "bn"),
        help="BatchNorm policy (the strategy's own: probe frozen, scratch train, others eval)",
    )  # fmt: skip
    p.add_argument(
        "--unfreeze-from",
        metavar="STAGE",
        help="partial: first trainable stage, or auto: the earliest stage the multi-layer "
        "probe reads on this data (the default stage when it reads the last alone)",
    )
    p.add_argument("--lr-decay", type=float, help="each earlier stage's LR x this (e.g. 0.5)")
    p.add_argument(
        "--stage-lr",
        type=stage_lr_arg,
        metavar="STAGE=MULT,...",
        help="finetune: LR multiplier per stage, e.g. layer1=0.01,layer3=0.1,layer4=1,head=10",
    )
    p.add_argument("--unfreeze-every", type=int, metavar="K", help="gradual: epochs per stage")
    p.add_argument("--probe-epochs", type=int, help="lp-ft: epochs of the probe phase")
    p.add_argument(
        "--warm-head", action=argparse.BooleanOptionalAction, default=None,
        help="strategies that train the backbone: fit the head on cached features first (on)",
    )  # fmt: skip


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Options shared by train and compare."""
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config; options override it")
    p.add_argument("--backbone", help="backbone name (see `headstart backbones`)")
    p.add_argument(
        "--weights",
        metavar="SOURCE",
        help="default | package | torchvision[:NAME] | timm[:TAG] | none | PATH | RUN_DIR "
        "(a run's trained backbone)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--accumulate", type=int, metavar="N",
        help="sum the gradients of N batches per optimizer step: the step of a batch N times "
        "larger in the memory of one (1)",
    )  # fmt: skip
    p.add_argument(
        "--lr", type=lr_arg, metavar="LR|auto",
        help="base learning rate (default: the strategy's own; auto: the range test's pick)",
    )  # fmt: skip
    add_strategy_options(p)
    p.add_argument("--dropout", type=float, help="dropout before the head (0)")
    p.add_argument(
        "--drop-path", type=float, metavar="RATE",
        help="stochastic depth while the backbone trains: residual branches skipped at random, "
        "deeper blocks more often, up to RATE (the architecture's own: 0 in timm)",
    )  # fmt: skip
    p.add_argument("--image-size", type=int, metavar="N", help="input size (the weights' own)")
    p.add_argument(
        "--crop-pct", type=float, metavar="F",
        help="centre-crop fraction of the resized image (the weights' own; 1.0 keeps it all)",
    )  # fmt: skip
    p.add_argument(
        "--layers", choices=choices(ModelConfig, "layers"),
        help="probe features: the last stage's (last) or every stage's, pooled (all)",
    )  # fmt: skip
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--grad-clip", type=float, help="max gradient norm (0 disables)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (--keep best)")
    p.add_argument(
        "--ema", type=float, metavar="EPOCHS",
        help="validate and keep a moving average of the weights spanning about EPOCHS epochs",
    )  # fmt: skip
    p.add_argument(
        "--mixup", type=float, metavar="ALPHA",
        help="blend pairs of images and their labels, weight ~ Beta(ALPHA, ALPHA)",
    )  # fmt: skip
    p.add_argument(
        "--cutmix", type=float, metavar="ALPHA",
        help="paste a box of another image, area ~ Beta(ALPHA, ALPHA); 50/50 with --mixup",
    )  # fmt: skip
    p.add_argument("--val-fraction", type=float, help="held-out fraction when splitting (0.2)")
    p.add_argument("--color-jitter", type=float, help="colour-jitter strength (0 = off)")
    p.add_argument(
        "--augment", choices=choices(DataConfig, "augment"),
        help="augmentation preset and TTA symmetry: photo, or orientation-free aerial/texture",
    )  # fmt: skip
    p.add_argument("--workers", type=int, help="DataLoader workers (default from core count)")
    p.add_argument(
        "--labels", metavar="CSV", help="labels CSV: an image column + a column per task"
    )
    p.add_argument("--images-root", metavar="DIR", help="folder the CSV's image paths start from")
    p.add_argument("--tasks", type=tasks_arg, metavar="T1,T2", help="CSV columns to learn (all)")
    p.add_argument(
        "--group", metavar="COLUMN",
        help="held out whole: a CSV column naming each image's subject (a patient's id), "
        "or near-duplicates (look-alike images, by perceptual hash)",
    )  # fmt: skip
    p.add_argument(
        "--task-weights",
        type=task_weights_arg,
        metavar="TASK=W,...",
        help="loss weight per task, e.g. type=1,defect=2 (1 each)",
    )
    p.add_argument(
        "--class-weights", choices=choices(OptimConfig, "class_weights"),
        help="per-task class weights",
    )  # fmt: skip
    p.add_argument(
        "--sampler", choices=choices(DataConfig, "sampler"),
        help="training order: shuffled (default), or class-balanced draws with replacement",
    )  # fmt: skip
    p.add_argument("--monitor", metavar="mean|TASK", help="best epoch by mean task acc (mean)")
    p.add_argument(
        "--keep", choices=choices(OptimConfig, "keep"),
        help="weights the run keeps: the best validated epoch's (default), or the last "
        "epoch's, chosen without the validation images (their accuracy then unbiased)",
    )  # fmt: skip
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature/decoded-image cache (default $HEADSTART_CACHE, else ~/.cache/headstart)",
    )
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_const",
        const=False,
        help="read and decode every image every epoch; cache nothing",
    )
    p.add_argument(
        "--cached-views",
        type=int,
        metavar="K",
        help="frozen-prefix strategies: augmented views cached per training image (0)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument(
        "--precision",
        choices=choices(TrainConfig, "precision"),
        help="autocast of forward and backward passes (auto: bf16 "
        "on GPUs and on CPUs with native bfloat16, fp16 on older GPUs, else fp32)",
    )
    p.add_argument(
        "--compile",
        action="store_const",
        const=True,
        help="torch.compile the training step (off by default: see docs on when it pays)",
    )
    p.add_argument(
        "--grad-checkpointing",
        action="store_const",
        const=True,
        help="recompute each block's activations in the backward pass: about half a "
        "fine-tune's memory for about 1.4x its step time",
    )
    p.add_argument(
        "--log",
        choices=choices(TrainConfig, "log"),
        help="also log to TensorBoard in RUN/tb/ (watch with: tensorboard --logdir RUN/tb)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace finished runs in --out")


RESUME_HELP = "keep the finished runs in --out, continue the interrupted one, start the rest"


def add_budget_option(p: argparse.ArgumentParser) -> None:
    """``--budget`` of ``recommend`` and ``train --strategy auto``."""
    p.add_argument(
        "--budget", metavar="TIME",
        help="time a fine-tune may take (15m, 1h, 90s; train: with --strategy auto); over it, "
        "the probe is chosen",
    )  # fmt: skip


def _data_command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand taking an optional DATA_DIR (``--labels`` or ``--config`` may give it)."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("data", nargs="?", metavar="DATA_DIR", help="dataset folder")
    return p


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = _data_command(
        sub,
        "train",
        "train a classifier on a folder of images",
        "Train on DATA_DIR (train/ and val/ class folders, or class folders to split).",
    )
    p.add_argument(
        "--strategy",
        help=f"{' | '.join(STRATEGIES)} | auto (chosen by `recommend`'s evidence; default probe)",
    )
    add_training_options(p)
    add_budget_option(p)
    p.add_argument("--out", metavar="runs/NAME", help="run folder")
    p.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue an interrupted run from its saved state (its own config and data)",
    )  # fmt: skip
    p.set_defaults(func=commands.train)


def _lr_find_parser(sub: argparse._SubParsersAction) -> None:
    p = _data_command(
        sub,
        "lr-find",
        "learning-rate range test for a strategy: loss against LR, and a pick",
        "Smith's range test on DATA_DIR with the strategy's real parameter groups; writes "
        "lr_find.png and lr_find.json into --out.",
    )
    p.add_argument("--strategy", help=f"{' | '.join(STRATEGIES)} (default finetune)")
    add_training_options(p)
    p.add_argument("--out", metavar="DIR", help="folder for lr_find.png and lr_find.json")
    p.set_defaults(func=commands.lr_find)


def _recommend_parser(sub: argparse._SubParsersAction) -> None:
    p = _data_command(
        sub,
        "recommend",
        "rank the backbones with local weights on your data from their frozen features",
        "LogME, leave-one-out k-NN and a cached probe (cross-validated and on the validation "
        "split) per backbone, with its measured speed; writes recommend.json and "
        "recommend.png into --out.",
    )
    p.add_argument(
        "--backbones", type=names_arg("BACKBONE", "tf_efficientnet_lite0,resnet18"),
        metavar="A,B,...",
        help="candidates (default: every registered backbone whose weights are on this machine)",
    )  # fmt: skip
    add_training_options(p)
    add_budget_option(p)
    p.add_argument("--out", metavar="DIR", help="folder for recommend.json and recommend.png")
    p.set_defaults(func=commands.recommend, strategy="probe")


def _compare_parser(sub: argparse._SubParsersAction) -> None:
    p = _data_command(
        sub,
        "compare",
        "race strategies on the same data, split, seed and epoch budget",
        "Train each strategy on DATA_DIR and print one comparison table.",
    )
    p.add_argument(
        "--strategies",
        default="scratch,probe,partial,finetune,gradual,lp-ft",
        help="comma-separated strategies (default: all six)",
    )
    p.add_argument(
        "--cv",
        type=bounded(int, 2),
        metavar="K",
        help="compare by K-fold cross-validation (see `cv`)",
    )
    add_training_options(p)
    p.add_argument("--out", metavar="runs/NAME", help="folder for compare.json, PNG and runs")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.set_defaults(func=commands.compare)


def _cv_parser(sub: argparse._SubParsersAction) -> None:
    p = _data_command(
        sub,
        "cv",
        "k-fold cross-validation with confidence intervals (and a paired comparison)",
        "Stratified k-fold CV on DATA_DIR (train and val pooled); shared folds.",
    )
    p.add_argument("--folds", type=bounded(int, 2), default=5, help="k (5)")
    p.add_argument(
        "--repeats", type=bounded(int, 1), default=1,
        help="repeat k-fold with new shuffles (1)",
    )  # fmt: skip
    p.add_argument(
        "--strategy", action="append", dest="strategies", metavar="S",
        help="strategy to cross-validate; repeat for a paired comparison (default probe)",
    )  # fmt: skip
    p.add_argument("--keep-test", action="store_true", help="use the train split only")
    add_training_options(p)
    p.add_argument("--out", metavar="runs/NAME", help="folder for cv.json and fold runs")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.set_defaults(func=commands.cv)


def _inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="a backbone's stages with parameter counts; a strategy's trainable set and LRs",
    )
    p.add_argument("backbone", metavar="BACKBONE")
    p.add_argument("--strategy", default="probe", help=" | ".join(STRATEGIES))
    p.add_argument(
        "--classes", type=bounded(int, 1), default=2, help="number of classes for the head (2)"
    )
    p.add_argument("--epochs", type=int, default=10, help="epoch budget (phases depend on it)")
    p.add_argument("--lr", type=float, help="base LR (default: the strategy's own)")
    p.add_argument(
        "--train-images", type=bounded(int, 1), default=1000,
        help="training images the default LR of backbone-training strategies scales with (1000)",
    )  # fmt: skip
    add_strategy_options(p)
    p.set_defaults(func=commands.inspect)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Transfer learning for image classification: train, evaluate, predict.",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _lr_find_parser(sub)
    _recommend_parser(sub)
    _compare_parser(sub)
    _cv_parser(sub)
    _inspect_parser(sub)

    p = sub.add_parser(
        "evaluate", help="accuracy with CI, per-class report, confusion, calibration, errors"
    )
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument(
        "data", nargs="?", metavar="DATA",
        help="a folder of class subfolders or a labels CSV (a test set); default: the run's own "
        "validation split. Images the run trained on are left out",
    )  # fmt: skip
    p.add_argument("--images-root", metavar="DIR", help="folder the CSV's image paths start from")
    p.add_argument("--batch-size", type=bounded(int, 1), default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true", help="average ten crops per image (and compare)")
    p.add_argument(
        "--calibrate", action="store_true",
        help="fit a temperature per task on the run's validation logits and store it",
    )  # fmt: skip
    p.add_argument(
        "--thresholds", choices=["f1", "none"],
        help="f1: pick and store each two-class task's decision threshold, the probability of "
        "its positive (second) class with the best F1 on the run's validation images (rare "
        "yes/no labels); none: remove them",
    )  # fmt: skip
    p.add_argument(
        "--no-analysis",
        action="store_true",
        help="skip the pass over the training images (likely label errors, near-duplicates)",
    )
    p.set_defaults(func=commands.evaluate)

    p = sub.add_parser("export", help="ONNX or torch.export file, verified against PyTorch")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--format", default="onnx", choices=["onnx", "torch-export"])
    # torch's ONNX exporter writes opsets 7 to 23 (torch.onnx._constants in 2.14): above, it
    # fails after printing its whole graph; below 7, ONNX Runtime cannot run the file
    p.add_argument("--opset", type=bounded(int, 7, 23), default=17,
                   help="ONNX opset, 7 to 23 (default 17)")  # fmt: skip
    p.add_argument(
        "--quantize",
        choices=["static", "dynamic"],
        help="also write an int8 ONNX (static: calibrated on training images, fast VNNI "
        "kernels; kept only when faster than float32)",
    )
    p.add_argument("--out", help="file to write (default RUN_DIR/model.onnx or model.pt2)")
    p.add_argument(
        "--images", nargs="+", metavar="IMAGE_OR_DIR",
        help="verify on these images (default: the run's validation split)",
    )  # fmt: skip
    p.set_defaults(func=commands.export)

    p = sub.add_parser("serve", help="HTTP prediction server with a web page")
    p.add_argument(
        "model", metavar="RUN_OR_EXPORT", help="run folder or .onnx export (never .pt2: code)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=bounded(int, 0, 65535), default=8000)
    p.add_argument("--workers", type=bounded(int, 1), default=1, help="server processes")
    p.add_argument("--max-batch", type=bounded(int, 1), default=32, help="images per model call")
    p.add_argument(
        "--max-wait-ms", type=bounded(float, 0), default=5.0, help="wait to fill a batch"
    )
    p.add_argument(
        "--max-file-mb", type=bounded(float, 0.001), default=10.0, help="per uploaded file (413)"
    )
    p.add_argument("--max-files", type=bounded(int, 1), default=16, help="per request (413)")
    p.set_defaults(func=commands.serve)

    p = sub.add_parser("report", help="one self-contained HTML page about a run")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    p.set_defaults(func=commands.report)

    p = sub.add_parser("predict", help="top-k labels for images or folders of images")
    p.add_argument(
        "run", metavar="RUN_DIR_OR_ONNX", help="a run folder, or an .onnx export (needs no torch)"
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--top-k", type=bounded(int, 1), default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true", help="average ten crops per image")
    p.set_defaults(func=commands.predict)

    p = sub.add_parser("backbones", help="list backbones and whether their weights are offline")
    p.set_defaults(func=commands.backbones)

    p = sub.add_parser(
        "cache",
        help="what the feature and decoded-image caches hold on disk; --clear deletes them",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR",
        help="the cache folder (default $HEADSTART_CACHE, else ~/.cache/headstart)",
    )  # fmt: skip
    p.add_argument(
        "--clear", action="store_true", help="delete every entry (recomputed when needed)"
    )
    p.set_defaults(func=commands.cache)
    _benchmark_parser(sub)
    return parser


def _benchmark_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="latency, throughput, FLOPs and memory of backbones on this machine",
        description="Times each backbone per runtime, precision and batch size (random "
        "weights where its weights are not here: latency does not depend on them); with "
        "--runs, plots their accuracy against latency. Writes benchmark.json and "
        "benchmark.png into --out.",
    )
    p.add_argument("backbones", nargs="*", metavar="BACKBONE",
                   help="default: the backbones with weights on this machine")  # fmt: skip
    p.add_argument("--batch-sizes", default="1,32", metavar="B1,B2")
    p.add_argument("--runtimes", type=names_arg("RUNTIME", "torch,onnx"),
                   default=["torch", "onnx"], metavar="R1,R2", help="torch, onnx")  # fmt: skip
    p.add_argument("--precision", type=names_arg("PRECISION", "fp32,int8"), default=["fp32"],
                   metavar="P1,P2", help="fp32, bf16 (torch), int8 (onnx, static)")  # fmt: skip
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN",
                   help="run folders or compare folders: accuracy against latency")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="folder for benchmark.json and benchmark.png")
    p.set_defaults(func=commands.benchmark)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code: 2 for bad input, 1 for anything else (the
    machine's limits, or a bug), each as a paragraph without a traceback."""
    for stream in (sys.stdout, sys.stderr):  # a file name's odd bytes never crash a print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    tune_allocator()  # large blocks reused, not mapped afresh for every batch
    say = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all
    try:
        return int(_run(args) or 0)
    except Interrupted as e:  # Ctrl-C during training: saved, and says how to resume
        if say:
            print(f"\n{e}", file=sys.stderr)
        return 130
    except HeadstartError as e:
        if say:
            print(f"error: {_paragraph(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if say:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # not bad input: the machine's limits, or a bug (traceback to a file)
        if debugging():
            raise
        if say:
            print(_paragraph(crash_message(e, argv)), file=sys.stderr)
        return 1


def _paragraph(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def _run(args: argparse.Namespace) -> int:
    """The command; under ``torchrun`` (``WORLD_SIZE`` > 1) ``train`` joins the process
    group first, and the other commands refuse."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return args.func(args)
    if args.func is not commands.train:
        raise ConfigError(
            "ConfigError: only `headstart train` runs under torchrun; run this command as one "
            "process."
        )
    from headstart.training.distributed import init_from_env, shutdown

    init_from_env(_train_device(args))
    try:
        return args.func(args)
    finally:
        shutdown()


def _train_device(args: argparse.Namespace) -> str:
    """The device ``train`` will run on, as asked (its process group's backend follows it)."""
    if args.resume:
        from headstart.training.train import resume_config

        return resume_config(args.resume).device
    return commands.config_from_args(args).device


if __name__ == "__main__":
    sys.exit(main())
