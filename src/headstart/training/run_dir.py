"""The run folder's life: start one, refuse to clobber, resume one, and publish a finished
run without ever destroying the previous one first.

* A finished run (``manifest.json``) is replaced with ``--overwrite`` only when the new run
  has finished: until then the new run trains in ``NAME.unfinished`` beside it, and a kill
  leaves the old run untouched.
* An unfinished run (a saved training state, no manifest) is never restarted by accident:
  rerunning the command says how to resume it; ``--overwrite`` starts it again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from headstart.errors import CheckpointError, ConfigError
from headstart.training.checkpoint import MANIFEST
from headstart.training.state import STATE_DIR, read_state_info

STAGED = ".unfinished"


def staging_dir(final: Path) -> Path:
    """Where a run that will replace the finished run ``final`` trains until it finishes."""
    return final.with_name(final.name + STAGED)


def _progress(run_dir: Path) -> str | None:
    """``"3 epoch(s) done"`` for a folder with a saved training state, else None."""
    info = read_state_info(run_dir)
    return None if info is None else f"{info['epoch']} epoch(s) done"


def resume_hint(final: Path) -> str:
    """The command that continues the unfinished run meant for ``final``."""
    return f"headstart train --resume {final}"


def check_run_dir(final: Path, overwrite: bool) -> None:
    """ConfigError when ``final`` holds a finished or an unfinished run and ``overwrite``
    was not given; says how to resume an unfinished one."""
    if overwrite:
        return
    if (final / MANIFEST).exists():
        pending = _progress(staging_dir(final))
        also = (
            f" An unfinished replacement ({pending}) is in {staging_dir(final)}: continue it "
            f"with `{resume_hint(final)}`."
            if pending
            else ""
        )
        raise ConfigError(
            f"ConfigError: {final} already holds a finished run. Choose another --out, or "
            f"pass --overwrite to replace it.{also}"
        )
    pending = _progress(final)
    if pending:
        raise ConfigError(
            f"ConfigError: {final} holds an unfinished run ({pending}). Continue it with "
            f"`{resume_hint(final)}`, or pass --overwrite to start again."
        )


def prepare_run_dir(out: str | Path, overwrite: bool, echo: Callable[[str], None] = print) -> Path:
    """The folder a new run trains in (see the module docstring); refuses to replace a
    finished or unfinished run unless ``overwrite``."""
    final = Path(out)
    check_run_dir(final, overwrite)
    staged = staging_dir(final)
    if (final / MANIFEST).exists():
        if staged.exists():
            if _progress(staged):
                echo(f"note: --overwrite discards the unfinished replacement in {staged}")
            shutil.rmtree(staged)
        staged.mkdir(parents=True)
        return staged
    pending = _progress(final)
    if pending:
        echo(f"note: --overwrite discards the unfinished run in {final} ({pending})")
    try:
        final.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"ConfigError: cannot create the run folder {final} ({e.strerror or e}). Choose a "
            "writable --out."
        ) from None
    shutil.rmtree(final / STATE_DIR, ignore_errors=True)  # an earlier start's leftovers
    (final / "metrics.jsonl").unlink(missing_ok=True)
    return final


def find_resumable(path: str | Path) -> Path:
    """The folder holding the unfinished run meant for ``path`` (``path`` itself, or its
    ``.unfinished`` replacement); CheckpointError when there is nothing to resume."""
    path = Path(path)
    for candidate in (path, staging_dir(path)):
        if read_state_info(candidate) is not None and not (candidate / MANIFEST).exists():
            return candidate
    if (path / MANIFEST).exists():
        raise CheckpointError(
            f"CheckpointError: {path} holds a finished run; there is nothing to resume. "
            "Use it (`headstart evaluate`, `predict`, `export`), or train again with --overwrite."
        )
    if path.is_dir() and (path / "config.yaml").exists():
        raise CheckpointError(
            f"CheckpointError: {path} has no saved training state: it stopped before its first "
            "epoch ended. Start it again with --overwrite (cached features are kept)."
        )
    raise CheckpointError(
        f"CheckpointError: {path} is not a run folder. Pass the --out folder of an interrupted "
        "`headstart train`."
    )


def publish(run_dir: Path, final: Path) -> Path:
    """Make the finished ``run_dir`` the run at ``final`` (swapping out a run it replaces);
    drops the training state, which a finished run no longer needs."""
    shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    if run_dir.resolve() == final.resolve():
        return final
    old = final.with_name(final.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(run_dir, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
