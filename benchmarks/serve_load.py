"""Serving under load: the real server (`headstart serve`, its own process) on loopback,
a bounded load with some malformed requests, then the same model's offline throughput.

Sends REQUESTS requests (one image each) from CONCURRENCY concurrent clients; a share of
them (--bad) is malformed, cycling through: not an image, truncated JPEG, empty file, wrong
field name, too many files. Prints throughput, latency percentiles, the status codes of the
malformed requests (all must be 4xx) and the count of 5xx (must be 0), then the ratio of the
served image throughput to the offline batch throughput of the same engine on the same images
(decode + preprocess + inference in batches of 32; target at least 0.9).

    .venv/bin/python benchmarks/serve_load.py [MODEL] [--requests 500] [--concurrency 8]

MODEL: a run folder or an export (default runs/demo/model.onnx, exported from runs/demo if
missing; `make demo` makes runs/demo). The client shares this machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from server import running_server

DATA = Path(__file__).resolve().parents[1] / "../shared/datasets/hymenoptera/val"


def malformed(i: int, image: bytes) -> dict:
    """The i-th kind of malformed request, as httpx keyword arguments."""
    kinds = [
        {"files": [("file", ("notes.txt", b"this is not an image", "text/plain"))]},
        {"files": [("file", ("cut.jpg", image[: len(image) // 3], "image/jpeg"))]},
        {"files": [("file", ("empty.jpg", b"", "image/jpeg"))]},
        {"files": [("upload", ("a.jpg", image, "image/jpeg"))]},
        {"files": [("file", (f"{k}.jpg", image, "image/jpeg")) for k in range(17)]},
    ]
    return kinds[i % len(kinds)]


async def load(url: str, images: list[bytes], requests: int, concurrency: int, bad: float):
    """Send the load; returns (latencies, statuses of good, statuses of bad, seconds)."""
    every = max(1, round(1 / bad)) if bad > 0 else 0
    latencies, good, wrong = [], Counter(), Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client(c: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            image = images[i % len(images)]
            is_bad = every and i % every == every - 1
            kwargs = malformed(i // every, image) if is_bad else {
                "files": [("file", (f"{i}.jpg", image, "image/jpeg"))]}  # fmt: skip
            t0 = time.perf_counter()
            r = await c.post(url + "/predict", **kwargs)
            latencies.append(time.perf_counter() - t0)
            (wrong if is_bad else good)[r.status_code] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return np.array(latencies), good, wrong, seconds


def offline_throughput(model: str, paths: list[Path], batch: int = 32) -> float:
    """Images/s of decode + preprocess + inference in batches, in this process."""
    from headstart.backbones import Preprocessing
    from headstart.data import eval_transform, load_rgb
    from headstart.export import load_engine

    engine = load_engine(model)
    prep = Preprocessing.from_dict(engine.meta["preprocessing"])
    transform = eval_transform(prep)
    white = prep.white_level  # deeper than 8 bits: read as in training
    engine.logits(np.stack([transform(load_rgb(paths[0], white)).numpy()]))  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        engine.logits(np.stack([transform(load_rgb(p, white)).numpy() for p in chunk]))
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="runs/demo/model.onnx")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--bad", type=float, default=0.1, help="share of malformed requests")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--data", type=Path, default=DATA)
    args = p.parse_args()
    paths = sorted(args.data.rglob("*.jpg"))
    images = [p.read_bytes() for p in paths]
    with running_server(args.model, args.port) as (url, _):
        # warm-up: one request per concurrent client, not counted
        asyncio.run(load(url, images, args.concurrency, args.concurrency, 0))
        lat, good, wrong, seconds = asyncio.run(
            load(url, images, args.requests, args.concurrency, args.bad)
        )
        health = httpx.get(url + "/health").json()
    n_good = sum(good.values())
    served = good[200] / seconds
    five = sum(v for k, v in (good + wrong).items() if k >= 500)
    bad_4xx = sum(v for k, v in wrong.items() if 400 <= k < 500)
    print(f"model {args.model} ({health['engine']}), {args.requests} requests, "
          f"{args.concurrency} concurrent, {sum(wrong.values())} malformed")  # fmt: skip
    print(f"wall {seconds:.1f} s; throughput {args.requests / seconds:.1f} requests/s, "
          f"{served:.1f} images/s served")  # fmt: skip
    pct = np.percentile(lat * 1000, [50, 95, 99])
    print(f"latency ms: p50 {pct[0]:.0f}  p95 {pct[1]:.0f}  p99 {pct[2]:.0f}")
    print(f"good requests: {n_good}, status {dict(good)}")
    print(f"malformed requests: {sum(wrong.values())}, status {dict(sorted(wrong.items()))}; "
          f"4xx {bad_4xx}")  # fmt: skip
    print(f"5xx responses: {five}")
    print(f"batches: {health['batches']} for {health['images']} images "
          f"(largest {health['largest_batch']})")  # fmt: skip
    offline = offline_throughput(args.model, paths)
    print(f"offline batch throughput (decode + preprocess + inference, batch 32): "
          f"{offline:.1f} images/s")  # fmt: skip
    print(f"served / offline: {served / offline:.2f} (target >= 0.90)")
    print(f"ratios: served/offline {served / offline:.2f}x")


if __name__ == "__main__":
    main()
