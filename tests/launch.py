"""``python -m tests.launch ARGS`` (or ``torchrun ... -m tests.launch ARGS``) is ``headstart
ARGS`` with the tests' tiny backbone registered, for tests that need a real process.

With ``HEADSTART_TEST_DUMP=DIR``, every process also writes ``DIR/rank{R}.json``: a digest
of each parameter before and after :func:`headstart.training.loop.fit`, and the stages its
plan trains, so a test can see what moved on which rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import tests.conftest  # noqa: F401  (registers the tiny backbone)
from headstart.cli.main import main
from headstart.training import loop


def _digests(model) -> dict[str, str]:
    return {
        n: hashlib.sha256(p.detach().float().cpu().numpy().tobytes()).hexdigest()
        for n, p in model.named_parameters()
    }


def _dumping_fit(original):
    def fit(model, plan, *args, **kwargs):
        before = _digests(model)
        result = original(model, plan, *args, **kwargs)
        stages = sorted({s for p in plan.phases for s, m in p.lr_mult.items() if m > 0})
        groups = {s: [n for n, _ in ps] for s, ps in loop.stage_params(model).items()}
        rank = os.environ.get("RANK", "0")
        out = Path(os.environ["HEADSTART_TEST_DUMP"]) / f"rank{rank}.json"
        out.write_text(json.dumps({"before": before, "after": _digests(model),
                                   "trained_stages": stages, "stages": groups}))  # fmt: skip
        return result

    return fit


if __name__ == "__main__":  # run as a program (collecting doctests imports it too)
    if os.environ.get("HEADSTART_TEST_DUMP"):
        runner = sys.modules["headstart.training.train"]
        runner.fit = _dumping_fit(runner.fit)  # type: ignore[attr-defined]  # what train() calls
    sys.exit(main())
