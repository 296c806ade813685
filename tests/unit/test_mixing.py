"""--mixup and --cutmix: the blends and the box against direct references, the blended loss
against soft-label cross-entropy, the draws tied to the step, and a run that mixes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from headstart.cli.main import main
from headstart.data.table import MISSING
from headstart.training.mixing import Mixing
from headstart.training.objective import Objective
from tests.unit.conftest import FAST, with_and_without


def _distinct_images(n: int = 6) -> torch.Tensor:
    """Images whose every pixel differs from every other image's (so a box shows)."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) + torch.rand(n, 3, 12, 10) * 0.5


def test_mixup_blends_each_image_with_its_partner() -> None:
    x = _distinct_images()
    mixed = Mixing(mixup=0.4, seed=3)(x, step=7)
    assert sorted(mixed.partner.tolist()) == list(range(6))  # a permutation of the batch
    assert 0.0 <= mixed.lam <= 1.0
    expected = mixed.lam * x + (1 - mixed.lam) * x[mixed.partner]
    assert torch.allclose(mixed.inputs, expected, atol=1e-6)


def test_the_draws_follow_seed_and_step_only() -> None:
    x = _distinct_images()
    a, b = Mixing(mixup=1.0, seed=3)(x, 7), Mixing(mixup=1.0, seed=3)(x * 2, 7)
    assert a.lam == b.lam and torch.equal(a.partner, b.partner)  # a resumed step mixes alike
    lams = {Mixing(mixup=1.0, seed=3)(x, step).lam for step in range(20)}
    assert len(lams) == 20
    assert Mixing(mixup=1.0, seed=4)(x, 7).lam != a.lam


def test_cutmix_pastes_one_box_of_the_partner_and_lam_is_the_area_kept() -> None:
    x = _distinct_images()
    boxes = 0
    for step in range(30):
        mixed = Mixing(cutmix=1.0, seed=0)(x, step)
        own = (mixed.inputs == x).all(dim=1)  # (N, H, W): pixel kept from the image itself
        theirs = (mixed.inputs == x[mixed.partner]).all(dim=1)
        moved = mixed.partner != torch.arange(6)
        assert bool((own | theirs).all())  # nothing else: no blending
        assert bool((own[moved] ^ theirs[moved]).all())
        pasted = ~own[moved]
        assert torch.equal(pasted, pasted[:1].expand_as(pasted))  # the same box in each image
        rows, cols = pasted[0].any(1).nonzero(), pasted[0].any(0).nonzero()
        if len(rows):  # a rectangle: every pixel inside its bounding box is pasted
            boxes += 1
            box = pasted[0][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert bool(box.all())
        assert mixed.lam == pytest.approx(own[moved].float().mean().item())
    assert boxes > 10


def test_with_both_each_batch_is_one_or_the_other() -> None:
    x = _distinct_images()
    kinds = set()
    for step in range(40):
        mixed = Mixing(mixup=0.4, cutmix=1.0, seed=0)(x, step)
        blended = torch.allclose(
            mixed.inputs, mixed.lam * x + (1 - mixed.lam) * x[mixed.partner], atol=1e-6
        )
        kinds.add("mixup" if blended else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_the_mixed_loss_is_cross_entropy_on_the_blended_labels() -> None:
    torch.manual_seed(0)
    logits = {"a": torch.randn(6, 4), "b": torch.randn(6, 3)}
    targets = {"a": torch.tensor([0, 1, 2, 3, 1, 0]), "b": torch.tensor([2, 1, 0, 2, 1, 0])}
    mixed = Mixing(mixup=0.4, seed=1)(torch.zeros(6, 5), 0)
    objective = Objective(task_weights={"b": 0.5})
    got = mixed.loss(objective.loss, logits, targets)
    expected = torch.zeros(())
    for task, y in targets.items():
        k = logits[task].shape[1]
        soft = mixed.lam * nn.functional.one_hot(y, k) + (1 - mixed.lam) * nn.functional.one_hot(
            y[mixed.partner], k
        )
        ce = nn.functional.cross_entropy(logits[task], soft.float())
        expected = expected + objective.task_weights.get(task, 1.0) * ce
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_training_accuracy_counts_the_larger_share() -> None:
    y = {"a": torch.tensor([0, 1, 2, 3])}
    x = torch.zeros(4, 2)
    mixes = [Mixing(mixup=0.4, seed=0)(x, step) for step in range(30)]
    low = next(m for m in mixes if m.lam < 0.5)
    high = next(m for m in mixes if m.lam >= 0.5)
    assert torch.equal(low.dominant(y)["a"], y["a"][low.partner])
    assert high.dominant(y) is y


def test_a_blank_label_only_drops_its_own_share() -> None:
    torch.manual_seed(0)
    logits = {"a": torch.randn(4, 3)}
    y = torch.tensor([0, MISSING, 2, 1])
    mixed = Mixing(mixup=1.0, seed=2)(torch.zeros(4, 2), 0)
    got = mixed.loss(Objective().loss, logits, {"a": y})
    mine = nn.functional.cross_entropy(logits["a"], y, ignore_index=MISSING)
    theirs = nn.functional.cross_entropy(logits["a"], y[mixed.partner], ignore_index=MISSING)
    assert got.item() == pytest.approx((mixed.lam * mine + (1 - mixed.lam) * theirs).item())
    assert torch.isfinite(got)


def test_a_mixing_run_trains_on_other_batches_and_says_so(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    option = ["--mixup", "0.4", "--cutmix", "1"]
    plain, mixed, manifest = with_and_without(option, trainval_dataset, tmp_path, capsys, 2)
    assert manifest["mixing"] == {"mixup": 0.4, "cutmix": 1.0}
    assert [h["train_loss"] for h in mixed] != [h["train_loss"] for h in plain]


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--mixup", "-1"], "expected a Beta alpha > 0"),
        (["--cutmix", "1"], "have no area"),  # the cached probe's pooled vectors
        (["--layers", "all", "--mixup", "0.2"], "leave out --mixup and --cutmix"),
    ],
)
def test_mixing_refuses_what_it_cannot_mix(
    option: list[str], says: str, trainval_dataset: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], *option,
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    assert says in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "r").exists()
