"""The allocator: the same commands with glibc's malloc as headstart tunes it
(``headstart.allocator``) and as the process finds it (``HEADSTART_MALLOC=system``), each a
process of its own (the setting is process-wide), in turn, round after round.

(a) ``headstart train DATA`` (the probe) with an empty feature cache;
(b) ``headstart train DATA --strategy finetune --epochs 2`` on a warm decoded-image cache
    (filled by one untimed run first): the seconds of each epoch as the run prints them.

Prints, per run, wall seconds, system (kernel) seconds, peak resident memory and the epochs'
seconds; then the ratios of the best runs.

    .venv/bin/python benchmarks/allocator_speed.py [--data ../shared/datasets/hymenoptera]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"
MODES = {"system": {"HEADSTART_MALLOC": "system"}, "tuned": {}}


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """``headstart ARGS`` in a child process: wall s, system s, peak RSS MB, its output."""
    full = {k: v for k, v in os.environ.items() if k != "HEADSTART_MALLOC"} | env
    cmd = [sys.executable, "-m", "headstart", "--no-progress", *args]
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read().decode() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if status:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}")
    return wall, usage.ru_stime, usage.ru_maxrss / 1024, out


def main() -> None:
    """Alternate the two allocator settings over (a) and (b); print figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    data, root = str(args.data.resolve()), Path(tempfile.mkdtemp(prefix="allocator-speed-"))
    warm = str(root / "warm")
    finetune = ["--strategy", "finetune", "--epochs", "2", "--cache-dir", warm]
    run(["train", data, *finetune, "--out", str(root / "fill")], {})  # decoded-image cache
    best: dict[tuple[str, str], float] = {}
    for r in range(args.rounds):
        for mode, env in MODES.items():
            for what in ("probe", "finetune"):
                tag = f"{what}-{mode}-{r}"
                extra = ["--cache-dir", str(root / tag)] if what == "probe" else finetune
                wall, sys_s, rss, out = run(["train", data, *extra, "--out", str(root / tag)], env)
                epochs = [float(s) for s in re.findall(r"(\d+\.\d)s  \(probe", out)]
                key = (what, mode)
                figure = sum(epochs) if epochs else wall
                best[key] = min(best.get(key, float("inf")), figure)
                shown = f"  epochs {' + '.join(f'{e:.1f}' for e in epochs)} s" if epochs else ""
                print(f"round {r + 1} {what:<8} {mode:<6} wall {wall:6.1f} s  system "
                      f"{sys_s:5.1f} s  peak RSS {rss:6.0f} MB{shown}", flush=True)  # fmt: skip
    for what in ("probe", "finetune"):
        s, t = best[what, "system"], best[what, "tuned"]
        unit = "epochs' seconds" if what == "finetune" else "wall"
        print(f"{what}: best {unit} system {s:.1f} s, tuned {t:.1f} s: {s / t:.2f}x")


if __name__ == "__main__":
    main()
