"""The offline weights are real ImageNet weights, and their own preprocessing matters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from headstart.backbones import Preprocessing, create_backbone
from headstart.data import ImageDataset, eval_transform, scan_folder

pytestmark = pytest.mark.integration
IMAGENET_CLASS = {"ants": 310, "bees": 309}


def zero_shot_top5(module: torch.nn.Module, val_dir: Path, prep: Preprocessing) -> float:
    scan = scan_folder(val_dir)
    wanted = torch.tensor([IMAGENET_CLASS[scan.classes[s.target]] for s in scan.samples])
    loader = DataLoader(ImageDataset(scan.samples, eval_transform(prep)), batch_size=50)
    module.eval()
    with torch.inference_mode():
        top5 = torch.cat([module(x).topk(5, dim=1).indices for x, _ in loader])
    return float((top5 == wanted[:, None]).any(dim=1).float().mean())


def test_imagenet_head_finds_ants_and_bees(hymenoptera: Path) -> None:
    bb = create_backbone("tf_efficientnet_lite0", imagenet_head=True)
    acc = zero_shot_top5(bb.module, hymenoptera / "val", bb.preprocessing)
    assert acc >= 0.85, f"top-5 zero-shot accuracy {acc:.3f}"
    imagenet_stats = dataclasses.replace(
        bb.preprocessing, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    wrong = zero_shot_top5(bb.module, hymenoptera / "val", imagenet_stats)
    assert wrong < acc - 0.05, f"own preprocessing {acc:.3f} vs ImageNet stats {wrong:.3f}"
