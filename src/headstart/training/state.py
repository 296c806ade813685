"""The resumable training state: written after every epoch (and on Ctrl-C), read by
``headstart train --resume``.

``RUN/resume/state.json`` holds everything that is not a tensor (schedule position and
phase, early-stopping state, history, optimizer hyperparameters, Python and NumPy RNG
states, what the data and caches were keyed on) and names its tensor file,
``RUN/resume/tensors-N.safetensors`` (model, best-epoch snapshot, optimizer moments, torch
RNG states, the data-order generator), with the file's SHA-256. Tensors are written first,
then the JSON replaces the previous one atomically: a kill at any point leaves the last
complete state. Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.errors import CheckpointError
from headstart.training.averaging import WeightAverage
from headstart.training.early_stopping import EarlyStopping
from headstart.training.files import sha256_file, write_atomic, write_file_atomic
from headstart.training.history import EpochStats

STATE_DIR = "resume"
STATE = "state.json"
FORMAT = "headstart-train-state/1"


@dataclass
class LoopState:
    """Everything the training loop carries from one step to the next."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of epoch ``epoch`` already trained (a mid-epoch save)
    step: int = 0  # optimizer steps so far (the schedule's position)
    phase: int = -1  # index of the plan phase entered last
    history: list[EpochStats] = field(default_factory=list)
    stopper: EarlyStopping = field(default_factory=lambda: EarlyStopping(None))
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # names that can change
    reason: str = ""
    done: bool = False  # every epoch ran, or early stopping ended the run
    loader_rng: torch.Tensor | None = None  # data-order generator at the start of ``epoch``
    loss_sum: torch.Tensor | None = None  # the current epoch's running sums
    seen: int = 0
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0  # the current epoch's training seconds before a mid-epoch save
    average: WeightAverage | None = None  # --ema: the weights' moving average


def _rng_json() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(keys), gauss],
        "numpy": [name, pos, has_gauss, cached],
        "_numpy_keys": np_keys,  # moved to the tensors before writing
    }


def save_state(
    run_dir: Path,
    st: LoopState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    fingerprint: dict[str, Any],
) -> None:
    """Write ``st`` with the model, optimizer and RNG states into ``run_dir/resume/``."""
    from safetensors.torch import save_file

    folder = run_dir / STATE_DIR
    folder.mkdir(exist_ok=True)
    previous = read_state_info(run_dir)
    number = previous["save"] + 1 if previous else 1
    model_state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for name in st.best_state:
        tensors[f"model/{name}"] = model_state[name]
        tensors[f"best/{name}"] = st.best_state[name]
    optim = optimizer.state_dict()
    optim_values: dict[str, dict[str, Any]] = {}
    for index, values in optim["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value
            else:
                optim_values.setdefault(str(index), {})[key] = value
    rng = _rng_json()
    tensors["rng/numpy"] = torch.from_numpy(rng.pop("_numpy_keys").astype(np.int64))
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, t in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = t
    if st.loader_rng is not None:
        tensors["rng/loader"] = st.loader_rng
    if st.loss_sum is not None:
        tensors["epoch/loss_sum"] = st.loss_sum
    for task, c in st.counts.items():
        tensors[f"epoch/counts/{task}"] = c
    if st.average is not None:
        for name, value in st.average.tensors.items():
            tensors[f"ema/{name}"] = value
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    name = f"tensors-{number}.safetensors"
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    write_file_atomic(folder / name, lambda tmp: save_file(tensors, str(tmp)), need)
    info = {
        "format": FORMAT,
        "save": number,
        "tensors": name,
        "tensors_sha256": sha256_file(folder / name),
        "epoch": st.epoch,
        "batch": st.batch,
        "step": st.step,
        "phase": st.phase,
        "done": st.done,
        "reason": st.reason,
        "seconds": st.seconds,
        "seen": st.seen,
        "ema_updates": st.average.updates if st.average is not None else None,
        "history": [h.to_dict() for h in st.history],
        "stopper": {
            "best": st.stopper.best,
            "best_epoch": st.stopper.best_epoch,
            "best_loss": st.stopper.best_loss,
        },
        "optimizer": {"param_groups": optim["param_groups"], "values": optim_values},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng,
        "fingerprint": fingerprint,
    }
    write_atomic(folder / STATE, json.dumps(info).encode())
    for old in folder.glob("tensors-*.safetensors"):  # earlier states: superseded
        if old.name != name:
            old.unlink(missing_ok=True)


def read_state_info(run_dir: Path) -> dict[str, Any] | None:
    """The saved state's JSON, or None when the run has none (or it is unreadable)."""
    try:
        info = json.loads((run_dir / STATE_DIR / STATE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


@dataclass
class SavedState:
    """A state read back from a run folder, ready to restore into a fresh loop."""

    info: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def phase(self) -> int:
        """Index of the plan phase the saved run was in."""
        return int(self.info["phase"])

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What the data, weights and caches were keyed on when the run started."""
        return self.info["fingerprint"]

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        changing: list[str],
        patience: int | None,
    ) -> LoopState:
        """Load weights, optimizer, scaler and every RNG; return the loop's state."""
        i, t = self.info, self.tensors
        names = [k.removeprefix("model/") for k in t if k.startswith("model/")]
        if sorted(names) != sorted(changing):
            raise CheckpointError(
                "CheckpointError: the saved training state holds other tensors than this "
                "model trains (was the code or the strategy changed?). Start again with "
                "--overwrite."
            )
        model.load_state_dict({n: t[f"model/{n}"] for n in names}, strict=False)
        optim_state: dict[int, dict[str, Any]] = {}
        for key, value in t.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                optim_state.setdefault(int(index), {})[name] = value
        for index, values in i["optimizer"]["values"].items():
            optim_state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict(
            {"state": optim_state, "param_groups": i["optimizer"]["param_groups"]}
        )
        if i["scaler"] and scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(i["scaler"])
        version, keys, gauss = i["rng"]["python"]
        random.setstate((version, tuple(keys), gauss))
        name, pos, has_gauss, cached = i["rng"]["numpy"]
        np.random.set_state((name, t["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss,
                             cached))  # fmt: skip
        torch.set_rng_state(t["rng/torch"])
        cuda = [t[k] for k in sorted(t) if k.startswith("rng/cuda/")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        stopper = EarlyStopping(patience)
        stopper.best = i["stopper"]["best"]
        stopper.best_epoch = i["stopper"]["best_epoch"]
        stopper.best_loss = i["stopper"]["best_loss"]
        history = [EpochStats.from_dict(h) for h in i["history"]]
        return LoopState(
            epoch=i["epoch"],
            batch=i["batch"],
            step=i["step"],
            phase=i["phase"],
            history=history,
            stopper=stopper,
            best_state={n: t[f"best/{n}"] for n in names},
            reason=i["reason"],
            done=i["done"],
            loader_rng=t.get("rng/loader"),
            loss_sum=t.get("epoch/loss_sum"),
            seen=i["seen"],
            counts={
                k.removeprefix("epoch/counts/"): v
                for k, v in t.items()
                if k.startswith("epoch/counts/")
            },
            seconds=i["seconds"],
        )

    def restore_average(self, average: WeightAverage) -> WeightAverage:
        """``average`` (built for this run) holding the saved run's moving average."""
        updates = self.info.get("ema_updates")
        saved = {k.removeprefix("ema/"): v for k, v in self.tensors.items() if k.startswith("ema/")}
        if updates is None or sorted(saved) != sorted(average.names):
            raise CheckpointError(
                "CheckpointError: the saved training state has no weight average for --ema "
                "(was --ema added since it started?). Resume without it, or start again with "
                "--overwrite."
            )
        average.tensors, average.updates = saved, int(updates)
        return average


def load_state(run_dir: Path) -> SavedState | None:
    """The run's saved state, checked against its SHA-256, or None when it has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_state_info(run_dir)
    if info is None:
        return None
    path = run_dir / STATE_DIR / str(info.get("tensors"))
    if not path.is_file() or sha256_file(path) != info.get("tensors_sha256"):
        raise CheckpointError(
            f"CheckpointError: the training state in {run_dir / STATE_DIR} is damaged ({path.name} "
            "is missing or changed). Start the run again with --overwrite."
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"CheckpointError: cannot read {path} ({e}). Start the run again with --overwrite."
        ) from None
    return SavedState(info, tensors)
