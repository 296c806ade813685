"""The prediction server (the ``serve`` extra): FastAPI over an engine (ONNX Runtime for an
export, PyTorch for a run folder), with micro-batching and strict, friendly input checks.

Endpoints: ``POST /predict`` (multipart field ``file``, repeatable; ``?top_k=``),
``GET /health``, ``GET /metadata``, ``GET /`` (a web page). Every error is JSON
``{"error": ..., "status": ...}``; bad input is always a 4xx, never a 5xx.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from headstart.imaging import ImageRefused, open_rgb
from headstart.runtime.engines import load_engine
from headstart.runtime.onnx import Engine
from headstart.runtime.predictions import answer_dict
from headstart.runtime.predictor import Predictor, softmax
from headstart.runtime.preprocess import preprocess
from headstart.serve.batcher import MicroBatcher

ENV_CONFIG = "HEADSTART_SERVE_CONFIG"  # how `--workers N` hands the settings to each worker


@dataclass(frozen=True)
class ServeConfig:
    """What to serve and the limits that keep bad input from hurting the server."""

    model: str
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_file_mb: float = 10.0
    max_files: int = 16
    max_pixels: int = 40_000_000  # larger images are refused as decompression bombs
    top_k: int = 3

    def to_env(self) -> str:
        """JSON for ``HEADSTART_SERVE_CONFIG``."""
        return json.dumps(asdict(self))


class UploadError(Exception):
    """A request the server refuses: HTTP status and a message saying what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(
    data: bytes, name: str, max_pixels: int, white_level: int | None = None
) -> Image.Image:
    """Bytes -> RGB image, or UploadError (400 not an image / truncated, 413 too many pixels);
    ``white_level``: the model's, for 16-bit images (see :func:`headstart.imaging.to_rgb`)."""
    if not data:
        raise UploadError(400, f"{name}: the file is empty. Send the image's bytes.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    413,
                    f"{name}: {width}x{height} pixels is more than the limit of {max_pixels:,} "
                    "(a decompression bomb, or a photo to downscale before sending).",
                )
            return open_rgb(image, white_level)
    except UploadError:
        raise
    except ImageRefused as e:
        raise UploadError(400, f"{name}: refused: {e}.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{name}: refused as a decompression bomb.") from None
    except Image.UnidentifiedImageError:
        raise UploadError(
            400,
            f"{name}: not an image PIL can read (send a JPEG, PNG, TIFF, WebP, GIF, BMP or DICOM).",
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UploadError(400, f"{name}: the image is damaged or truncated ({e}).") from None


class Service:
    """The engine, its preprocessing and the batcher, shared by the endpoints."""

    def __init__(self, config: ServeConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or load_engine(config.model)
        self.meta = self.engine.meta
        self.predictor = Predictor(self.engine)
        self.batcher = MicroBatcher(self.engine, config.max_batch, config.max_wait_ms)

    def preprocess(self, uploads: list[tuple[str, bytes]]) -> np.ndarray:
        """Decode and preprocess every upload (runs in a worker thread)."""
        limit, white = self.config.max_pixels, self.predictor.white_level
        images = [decode_image(data, name, limit, white) for name, data in uploads]
        prep = self.meta["preprocessing"]  # NumPy and Pillow: no torch in an ONNX server
        return np.stack([preprocess(im, prep) for im in images])

    def answers(self, logits: dict[str, np.ndarray], k: int) -> list[dict[str, Any]]:
        """Per image, ``{"predictions": top-k labels and probabilities per task}`` and, for
        tasks with a decision threshold, ``{"decisions": ...}``."""
        probs = {t: softmax(v) for t, v in logits.items()}
        tops, decisions = self.predictor.top(probs, k), self.predictor.decisions(probs)
        return [answer_dict(top, decided) for top, decided in zip(tops, decisions)]


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The FastAPI application for ``config`` (``engine``: an already loaded one)."""
    service = Service(config, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="headstart", lifespan=lifespan)
    app.state.service = service

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, e: UploadError) -> JSONResponse:
        return error(e.status, e.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in e.errors()]
        return error(422, "; ".join(parts))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("headstart").joinpath("templates/index.html").read_text()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        s = service.batcher.stats
        return {"status": "ok", "model_id": service.meta["model_id"],
                "engine": service.engine.name, "batches": s.batches, "images": s.images,
                "largest_batch": s.largest}  # fmt: skip

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return {**service.meta, "engine": service.engine.name, "limits": asdict(config)}

    @app.post("/predict")
    async def predict(request: Request, top_k: int | None = None) -> dict[str, Any]:
        k = config.top_k if top_k is None else top_k
        if k < 1:
            raise UploadError(422, "top_k must be at least 1.")
        max_bytes = int(config.max_file_mb * 1e6)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_files * max_bytes + 1_000_000:
            limit = f"{config.max_files} files of {config.max_file_mb:g} MB"
            raise UploadError(413, f"the request is {int(length) / 1e6:.1f} MB; limit {limit}.")
        kind = request.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            raise UploadError(
                415 if kind else 422,
                "send images as multipart/form-data in the field 'file' "
                "(curl -F file=@photo.jpg ...)",
            )
        try:
            form = await request.form(max_files=config.max_files, max_fields=100)
        except HTTPException as e:
            if "Too many files" in str(e.detail):
                raise UploadError(413, f"more than {config.max_files} files in one request; "
                                  "split them over several requests.") from None  # fmt: skip
            raise UploadError(400, f"the multipart body cannot be parsed: {e.detail}") from None
        files = [v for key in ("file", "files") for v in form.getlist(key)]
        files = [f for f in files if isinstance(f, UploadFile)]
        if not files:
            names = sorted(set(form.keys()))
            hint = (
                f" (got field {', '.join(map(repr, names))})" if names else " (the body is empty)"
            )
            raise UploadError(422, f"no image in the multipart field 'file'{hint}.")
        uploads = []
        for f in files:
            data = await f.read(max_bytes + 1)
            name = f.filename or "upload"
            if len(data) > max_bytes:
                raise UploadError(413, f"{name}: larger than the {config.max_file_mb:g} MB limit.")
            uploads.append((name, data))
        batch = await run_in_threadpool(service.preprocess, uploads)
        logits = await service.batcher.submit(batch)
        results = [
            {"filename": name, **answer}
            for (name, _), answer in zip(uploads, service.answers(logits, k))
        ]
        return {"model_id": service.meta["model_id"], "results": results}

    return app


def app_from_env() -> Any:
    """Factory for uvicorn's worker processes (``--workers N``)."""
    return create_app(ServeConfig(**json.loads(os.environ[ENV_CONFIG])))


def serve(
    config: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    engine: Engine | None = None,
) -> None:
    """Run the server until interrupted (``engine``: already loaded, for a single worker)."""
    import uvicorn

    if workers > 1:
        os.environ[ENV_CONFIG] = config.to_env()
        uvicorn.run("headstart.serve.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level="info")  # fmt: skip
    else:
        uvicorn.run(create_app(config, engine), host=host, port=port, log_level="info")


__all__ = ["ServeConfig", "UploadError", "create_app", "decode_image", "serve"]
