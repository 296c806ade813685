"""A real `headstart serve` process on loopback for the serving benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def exported(model: str) -> str:
    """``model``, exporting its run folder first when it names a missing ``.onnx``."""
    if model.endswith(".onnx") and not Path(model).is_file():
        from headstart.export import export_run

        print(f"exporting {Path(model).parent} to {model} first")
        export_run(Path(model).parent, out=model, progress=False)
    return model


@contextmanager
def running_server(model: str, port: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``headstart serve MODEL --port PORT``, wait for /health, yield (url, process),
    then stop it."""
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "headstart"), "serve", exported(model), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            sys.exit(f"server did not start: {server.stderr.read().decode()[-2000:]}")
        yield url, server
    finally:
        server.terminate()
        server.wait(30)
