"""The caches: atomic store, keys that change when they must, and cached == computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import create_backbone
from headstart.cache import ArrayStore, Cache, cache_root
from headstart.cache.decoded import DecodedImages
from headstart.cache.features import FeatureSource, cached_features
from headstart.config import TrainConfig
from headstart.data import Sample, audit_image, eval_transform, load_rgb, train_transform
from headstart.evaluation import evaluate_run
from headstart.training import train
from headstart.training.inputs import feature_cut
from headstart.training.setup import plan_for, resolve_config
from tests.conftest import TINY, make_image, make_trainval


def _train(data: Path, out: Path, cache: Path, **over: object) -> dict:
    overrides = {"data.root": str(data), "out": str(out), "model.backbone": TINY,
                 "data.num_workers": 0, "data.cache_dir": str(cache), "optim.epochs": 3,
                 "optim.batch_size": 8, **over}  # fmt: skip
    train(TrainConfig().with_overrides(overrides), echo=lambda s: None, progress=False)
    return json.loads((out / "manifest.json").read_text())


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("HEADSTART_CACHE")
    assert cache_root().name == "headstart"  # the platform's user cache folder


def test_store_is_atomic_and_drops_damaged_entries(tmp_path: Path) -> None:
    store = ArrayStore(tmp_path)
    store.put("abcd", np.arange(5, dtype=np.float32))
    assert np.array_equal(store.get("abcd"), np.arange(5))
    assert not list(tmp_path.rglob(".tmp-*"))  # no temporary file left behind
    store.path("abcd").write_bytes(b"\x93NUMPY garbage")  # a torn or damaged file
    assert store.get("abcd") is None and "abcd" not in store
    assert store.get("missing") is None


def test_interrupted_computation_keeps_finished_entries_only(tmp_path: Path) -> None:
    images = [make_image(tmp_path / "img" / f"{i}.png", (i * 20, 0, 0)) for i in range(6)]
    samples = [Sample(p, 0) for p in images]
    cache = Cache(tmp_path / "cache")
    source = FeatureSource("x", "w", {}, "pooled")
    calls = []

    def failing(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return x.mean((2, 3))

    kwargs = {"device": torch.device("cpu"), "batch_size": 2, "progress": False}
    tf = [lambda im: torch.from_numpy(np.asarray(im.resize((8, 8)), np.float32)).permute(2, 0, 1)]
    with pytest.raises(KeyboardInterrupt):
        cached_features(cache, source, failing, samples, tf, ["clean"], **kwargs)
    assert not list((tmp_path / "cache").rglob(".tmp-*"))
    feats, computed = cached_features(
        cache, source, lambda x: x.mean((2, 3)), samples, tf, ["clean"], **kwargs
    )
    assert computed == 4  # the first batch (2 images) survived the interruption
    assert feats.shape == (6, 1, 3)
    expected = torch.stack([tf[0](load_rgb(p)).mean((1, 2)) for p in images])
    assert torch.allclose(feats[:, 0], expected)


def test_probe_features_are_cached_reused_and_recomputed_when_a_file_changes(
    tmp_path: Path,
) -> None:
    data = make_trainval(tmp_path / "tv")
    weights = []
    for seed in (0, 1):  # two weight files for the tiny backbone
        torch.manual_seed(seed)
        weights.append(tmp_path / f"w{seed}.pt")
        torch.save(create_backbone(TINY, "none").module.state_dict(), weights[-1])
    w0 = {"model.weights": str(weights[0])}
    first = _train(data, tmp_path / "r1", tmp_path / "cache", **w0)
    n = first["data"]["train"] + first["data"]["val"]
    where = first["inputs"].pop("features")  # evaluate refits the head on them
    assert where["cache"] == str(tmp_path / "cache") and len(where["key"]) == 32
    assert first["inputs"] == {"reads": "features", "boundary": "pooled", "views": 0,
                               "computed": n, "reused": 0}  # fmt: skip
    # another seed and another head reuse everything
    second = _train(data, tmp_path / "r2", tmp_path / "cache", seed=7,
                    **{**w0, "model.dropout": 0.1})  # fmt: skip
    assert (second["inputs"]["computed"], second["inputs"]["reused"]) == (0, n)
    make_image(data / "train" / "red" / "0.png", (255, 0, 0), seed=99)  # new content
    third = _train(data, tmp_path / "r3", tmp_path / "cache", **w0)
    assert third["inputs"]["computed"] == 1
    other = _train(data, tmp_path / "r4", tmp_path / "cache", **{"model.weights": str(weights[1])})
    assert other["inputs"]["computed"] == n  # other weights: another key


def test_a_probe_on_cached_features_equals_the_full_model(tmp_path: Path) -> None:
    """The checkpoint saved after training on cached features, run on images, scores the
    same validation accuracy the loop measured on the features."""
    data = make_trainval(tmp_path / "tv")
    m = _train(data, tmp_path / "run", tmp_path / "cache", **{"optim.epochs": 4})
    ev = evaluate_run(tmp_path / "run", data / "val", device="cpu", progress=False)
    assert ev.accuracy == pytest.approx(m["metrics"]["val_acc"])
    # every headline accuracy carries its 95% interval, in the manifest and metrics.jsonl
    lo, hi = m["metrics"]["val_acc_ci"]
    assert lo <= m["metrics"]["val_acc"] <= hi and m["metrics"]["val_n"] == 12
    epochs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(e["val_acc_ci"][0] <= e["val_acc"] <= e["val_acc_ci"][1] for e in epochs)


def test_partial_trains_its_tail_on_cached_prefix_outputs(tmp_path: Path) -> None:
    data = make_trainval(tmp_path / "tv")
    m = _train(data, tmp_path / "run", tmp_path / "cache",
               **{"strategy.name": "partial", "strategy.unfreeze_from": "blocks.4",
                  "strategy.lr": 1e-3})  # fmt: skip
    assert m["inputs"]["reads"] == "features" and m["inputs"]["boundary"] == "blocks.4"
    ev = evaluate_run(tmp_path / "run", data / "val", device="cpu", progress=False)
    assert ev.accuracy == pytest.approx(m["metrics"]["val_acc"])
    # the tail trained, the prefix did not
    from headstart.training import load_run

    trained = load_run(tmp_path / "run").model.backbone.state_dict()
    torch.manual_seed(0)  # what train() does before creating the backbone
    fresh = create_backbone(TINY, "none").module.state_dict()
    assert torch.equal(trained["blocks.3.0.conv_pw.weight"], fresh["blocks.3.0.conv_pw.weight"])
    assert not torch.equal(trained["blocks.4.0.conv_pw.weight"], fresh["blocks.4.0.conv_pw.weight"])


def test_a_warm_cache_trains_the_weights_a_cold_one_does(tmp_path: Path) -> None:
    """Computing features draws nothing from the RNG that dropout uses, so the same command
    run again on a warm cache trains the same weights."""
    from safetensors.torch import load_file

    data = make_trainval(tmp_path / "tv")
    over = {"strategy.name": "partial", "strategy.unfreeze_from": "blocks.4", "model.dropout": 0.5}
    cold = _train(data, tmp_path / "cold", tmp_path / "cache", **over)
    warm = _train(data, tmp_path / "warm", tmp_path / "cache", **over)
    assert cold["inputs"]["computed"] > 0 and warm["inputs"]["computed"] == 0
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("cold", "warm"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("strategy", "extra", "why"),
    [
        ("finetune", {}, "every backbone stage trains"),
        ("gradual", {}, "changes what is frozen"),
        ("partial", {"strategy.bn": "train"}, "--bn train"),
    ],
)
def test_strategies_that_cannot_use_cached_features_say_why(
    strategy: str, extra: dict, why: str
) -> None:
    over = {"data.root": "x", "model.backbone": TINY, "strategy.name": strategy, **extra}
    cfg = resolve_config(TrainConfig().with_overrides(over))
    bb = create_backbone(TINY, "none")
    cut, reason = feature_cut(bb, plan_for(cfg, bb))
    assert cut is None and why in reason


def test_augmented_views_are_reproducible_and_differ_from_the_clean_view(tmp_path: Path) -> None:
    images = [make_image(tmp_path / f"{i}.png", (200, 40, 40), size=64, seed=i) for i in range(3)]
    samples = [Sample(p, 0) for p in images]
    bb = create_backbone(TINY, "none")
    prep = bb.preprocessing
    args = (FeatureSource(TINY, "w", prep.to_dict(), "pooled"), bb.module.eval(), samples,
            [eval_transform(prep), train_transform(prep)], ["clean", ["aug", 0, {}]])  # fmt: skip
    kwargs = {"device": torch.device("cpu"), "progress": False}
    a, _ = cached_features(Cache(tmp_path / "c1"), *args, **kwargs)
    b, _ = cached_features(Cache(tmp_path / "c2"), *args, **kwargs)  # computed afresh
    assert torch.equal(a, b)
    assert not torch.allclose(a[:, 0], a[:, 1])


def test_decoded_images_equal_the_resized_original(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 420, 3), np.uint8)).save(path)
    prep = create_backbone(TINY, "none").preprocessing
    decoded = DecodedImages(Cache(tmp_path / "cache"), prep)
    first = decoded.load(path)
    assert min(first.size) == prep.resize_size
    assert decoded.store.get(decoded.cache.digest(path)) is not None
    again = decoded.load(path)  # now from the store
    assert np.array_equal(np.asarray(first), np.asarray(again))
    tf = eval_transform(prep)
    assert torch.equal(tf(again), tf(load_rgb(path)))  # evaluation is bit-identical


def test_audits_are_cached_by_content(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    good = make_image(tmp_path / "good.png", (1, 2, 3))
    bad.write_bytes(good.read_bytes()[:60])
    cache = Cache(tmp_path / "cache")
    reason = audit_image(bad, cache)
    assert reason is not None
    assert audit_image(bad, cache) == reason
    assert audit_image(good, cache) is None and audit_image(good, cache) is None
    assert len(list((tmp_path / "cache" / "audit").rglob("*.npy"))) == 2


def test_features_too_large_for_memory_fall_back_to_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.training.inputs as inputs

    monkeypatch.setattr(inputs, "FEATURE_MEMORY_LIMIT", 1000)
    data = make_trainval(tmp_path / "tv")
    m = _train(data, tmp_path / "run", tmp_path / "cache", **{"optim.epochs": 1})
    assert m["inputs"]["reads"] == "images" and "GB of memory" in m["inputs"]["why"]


def test_an_unusable_cache_folder_is_a_clear_error(tmp_path: Path) -> None:
    from headstart.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"--cache-dir DIR .* or --no-cache"):
        Cache(blocker / "cache")


def test_the_cache_command_counts_what_a_run_stored_and_clears_only_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from headstart.cache.usage import usage
    from headstart.cli.main import main

    data, cache = make_trainval(tmp_path / "tv"), tmp_path / "cache"
    first = _train(data, tmp_path / "r1", cache)
    n = first["data"]["train"] + first["data"]["val"]
    kinds = {k.kind: k for k in usage(cache)}
    assert kinds["features"].parts >= 1 and kinds["features"].entries == n
    assert kinds["audit"].entries == n and kinds["decoded"].entries == 0
    assert kinds["features"].bytes >= sum(  # blocks on disk, folders too
        p.stat().st_size for p in cache.rglob("features/**/*.npy")
    )
    (cache / "mine.txt").write_text("not the cache's")  # a folder shared with other files
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("features"))
    assert row[:3] == ["features", str(kinds["features"].parts), str(n)] and "--clear" in out
    assert main(["cache", "--cache-dir", str(cache), "--clear"]) == 0
    assert "freed" in capsys.readouterr().out
    assert sorted(p.name for p in cache.iterdir()) == ["mine.txt"]
    assert all(k.entries == k.bytes == 0 for k in usage(cache))
    again = _train(data, tmp_path / "r2", cache)  # recomputed, not missed
    assert (again["inputs"]["computed"], again["inputs"]["reused"]) == (n, 0)
