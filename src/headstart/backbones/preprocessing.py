"""The preprocessing record that travels with a backbone's weights.

It is read from the weights' own metadata (timm's ``pretrained_cfg``, torchvision's
``Weights.transforms()``), stored in every checkpoint manifest, and is the only source the
train/eval transforms, exports and the server derive their pixels from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Interpolation = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a given set of weights.

    Eval pipeline: read the image as 8-bit RGB (grey stored in more than 8 bits scaled so
    that ``white_level`` is white, when the training images set one), resize the shorter side to
    ``resize_size`` with ``interpolation``, centre-crop ``input_size``, scale to [0, 1], then
    normalise with ``mean`` and ``std``.
    """

    input_size: int
    resize_size: int
    interpolation: Interpolation
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    white_level: int | None = None  # deeper than 8 bits: the value read as white (None: 65535)

    @property
    def crop_pct(self) -> float:
        """Fraction of the resized image the centre crop keeps."""
        return self.input_size / self.resize_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists, not tuples), with crop_pct for readers of the manifest."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["crop_pct"] = round(self.crop_pct, 6)
        if self.white_level is None:  # 8-bit data keeps the record (and cache keys) it had
            del d["white_level"]
        return d

    def at_size(self, input_size: int, crop_pct: float | None = None) -> Preprocessing:
        """The same preprocessing at another input size (``--image-size``), keeping the
        weights' crop fraction unless ``crop_pct`` is given (1.0: no border is cut, for
        images framed edge to edge such as solar cells or microscopy tiles).

        >>> Preprocessing(224, 256, "bicubic", (0.5,) * 3, (0.5,) * 3).at_size(300, 1.0).resize_size
        300
        """
        crop = self.crop_pct if crop_pct is None else crop_pct
        return replace(
            self, input_size=input_size, resize_size=math.floor(input_size / crop + 1e-6)
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict` (extra keys such as crop_pct are ignored)."""
        return cls(
            input_size=int(d["input_size"]),
            resize_size=int(d["resize_size"]),
            interpolation=d["interpolation"],
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            white_level=int(d["white_level"]) if d.get("white_level") is not None else None,
        )

    @classmethod
    def from_timm(cls, model: Any) -> Preprocessing:
        """Read a timm model's ``pretrained_cfg`` through timm's own resolver."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        size = int(cfg["input_size"][-1])
        return cls(
            input_size=size,
            resize_size=math.floor(size / cfg["crop_pct"]),
            interpolation=cfg["interpolation"],
            mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        )

    @classmethod
    def from_torchvision(cls, weights: Any) -> Preprocessing:
        """Read a torchvision ``Weights`` enum member's eval transform."""
        t = weights.transforms()
        return cls(
            input_size=int(t.crop_size[0]),
            resize_size=int(t.resize_size[0]),
            interpolation=t.interpolation.value,
            mean=tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in t.std),  # type: ignore[arg-type]
        )
