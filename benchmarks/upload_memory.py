"""Server memory per upload: the real server (`headstart serve`, its own process) is sent one
upload of each kind that passes its limits (40 megapixels, 10 MB per file) and costs the
most to decode, and the peak resident memory it gains over its idle level is read from
/proc (the peak is reset before each upload). Target: every upload under 300 MB; an
extreme aspect ratio (1x3000 pixels) is refused before it is resized.

    .venv/bin/python benchmarks/upload_memory.py [MODEL] [--port 8766]

MODEL: a run folder or an ONNX export (default runs/demo/model.onnx, exported from runs/demo
if missing; `make demo` makes runs/demo). Linux only (reads /proc/PID/status).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from server import running_server

SIDE = 6320  # 6320 x 6320 = 39.9 megapixels, just under the server's 40 MP limit


def _png(image: Image.Image, **kw: object) -> bytes:
    b = io.BytesIO()
    image.save(b, "PNG", **kw)
    return b.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    b = io.BytesIO()
    image.save(b, "JPEG", quality=60)
    return b.getvalue()


def _tiff(image: Image.Image) -> bytes:
    b = io.BytesIO()
    image.save(b, "TIFF", compression="tiff_deflate")
    return b.getvalue()


def _plain(mode: str) -> Image.Image:
    """A 40 MP image of mode ``mode`` with a gradient (it compresses under 10 MB)."""
    ramp = Image.linear_gradient("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_90), ramp)).convert(mode)


UPLOADS: dict[str, Callable[[], bytes]] = {
    "JPEG RGB 40 MP": lambda: _jpeg(_plain("RGB")),
    "JPEG CMYK 40 MP": lambda: _jpeg(_plain("CMYK")),
    "PNG RGBA 40 MP (transparent)": lambda: _png(Image.new("RGBA", (SIDE, SIDE), (9, 9, 9, 90))),
    "PNG 16-bit grey 40 MP": lambda: _png(Image.fromarray(np.full((SIDE, SIDE), 40000, np.uint16))),
    "PNG palette 40 MP": lambda: _png(Image.new("P", (SIDE, SIDE), 3), transparency=3),
    "TIFF float 40 MP": lambda: _tiff(Image.new("F", (SIDE, SIDE), 0.5)),
    "PNG 1x3000 strip": lambda: _png(Image.new("RGB", (1, 3000), (1, 2, 3))),
    "JPEG 20000x2000 panorama": lambda: _jpeg(Image.new("RGB", (20000, 2000), (5, 90, 30))),
}


def rss_mb(pid: int, field: str) -> float:
    """VmRSS or VmHWM of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="runs/demo/model.onnx")
    p.add_argument("--port", type=int, default=8766)
    args = p.parse_args()
    uploads = {name: make() for name, make in UPLOADS.items()}
    rows = []
    with running_server(args.model, args.port) as (url, server):
        small = _jpeg(_plain("RGB").resize((300, 300)))
        for _ in range(3):  # warm-up: allocator pools, the first batch
            httpx.post(url + "/predict", files={"file": ("w.jpg", small)}, timeout=60)
        for name, data in uploads.items():
            idle = rss_mb(server.pid, "VmRSS")
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the peak
            r = httpx.post(url + "/predict", files={"file": ("x", data)}, timeout=120)
            gain = rss_mb(server.pid, "VmHWM") - idle
            rows.append((name, len(data) / 1e6, r.status_code, gain, r.json()))
    print(f"server: headstart serve {args.model}; peak RSS gained per upload over idle")
    for name, mb, status, gain, body in rows:
        note = "" if status == 200 else f"  ({body.get('error', '')[:70]})"
        print(f"  {name:<30} {mb:6.2f} MB file  HTTP {status}  +{gain:6.0f} MB{note}")
    worst = max(r[3] for r in rows)
    print(f"ratios: worst upload / limit {worst / 300:.2f} (largest gain {worst:.0f} MB, "
          "limit 300 MB)")  # fmt: skip


if __name__ == "__main__":
    main()
