"""Shared fixtures: a tiny registered backbone, generated image datasets, the real data root."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.backbones import BackboneSpec, get_spec, register
from headstart.errors import UnknownBackbone

TINY = "tiny_efficientnet"  # timm's 356k-parameter test_efficientnet (BatchNorm, 160 px)
DATA_ROOT = Path(os.environ.get("HEADSTART_DATA", Path(__file__).parents[1] / "../shared/datasets"))
HYMENOPTERA = DATA_ROOT / "hymenoptera"

# Tests never touch the user's cache: one fresh cache folder per test session, removed at
# exit (a session's cache holds hundreds of MB of real-dataset features).
os.environ["HEADSTART_CACHE"] = tempfile.mkdtemp(prefix="headstart-test-cache-")
atexit.register(shutil.rmtree, os.environ["HEADSTART_CACHE"], ignore_errors=True)

try:
    get_spec(TINY)
except UnknownBackbone:
    register(
        BackboneSpec(
            name=TINY,
            library="timm",
            arch="test_efficientnet",
            default_weights="none",
            summary="tiny random EfficientNet for tests",
            family="timm_efficientnet",
        )
    )


def make_image(path: Path, colour: tuple[int, int, int], size: int = 48, seed: int = 0) -> Path:
    """A noisy image around ``colour`` (so classes are learnable but not identical)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(colour, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 200, 40)}


def make_class_folders(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` with ``classes[name]`` images each."""
    for k, (name, n) in enumerate(classes.items()):
        for i in range(n):
            make_image(root / name / f"{i}.png", COLOURS[name], seed=seed + 100 * k + i)
    return root


@pytest.fixture
def split_dataset(tmp_path: Path) -> Path:
    """Two colour classes in one folder (to be split)."""
    return make_class_folders(tmp_path / "colours", {"red": 20, "blue": 20})


def make_trainval(root: Path) -> Path:
    """Two colour classes with train/ and val/ folders."""
    make_class_folders(root / "train", {"red": 16, "blue": 16})
    make_class_folders(root / "val", {"red": 6, "blue": 6}, seed=1000)
    return root


@pytest.fixture
def trainval_dataset(tmp_path: Path) -> Path:
    """Two colour classes with train/ and val/ folders."""
    return make_trainval(tmp_path / "tv")


def _real(path: Path) -> Path:
    """A real dataset folder, or a skip saying where it was expected (a failure under CI)."""
    if not path.is_dir():
        message = f"real dataset not found at {path} (set HEADSTART_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the integration tests")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    """The real ants/bees dataset."""
    return _real(HYMENOPTERA)


@pytest.fixture(scope="session")
def elpv() -> Path:
    """The real solar-cell dataset (module type and defect grade in tasks.csv)."""
    return _real(DATA_ROOT / "elpv")
