"""DICOM (``.dcm``) images, read by Pillow like any other format, through pydicom.

Hospital datasets (RSNA pneumonia, SIIM) ship radiographs as DICOM: pixels stored in up to 16
bits, a modality rescale (slope and intercept) and a window the radiologist reads them in,
and MONOCHROME1 images where a high value is dark. Registering a Pillow plugin makes every
reader of headstart (the scan, the caches, training, evaluation, predict and the server)
open them as it opens a PNG, with the same pixels: the stored values through the modality
rescale, then the file's own window (its first VOI LUT or window centre and width) mapped
to 8-bit grey, inverted for MONOCHROME1; without a window, the stored bit depth's range is
the window (as a white level is for 16-bit PNGs: never each image's own minimum and maximum).
Colour DICOMs are read as RGB. A multi-frame file (a CT series, a cine loop) is refused:
headstart learns from one image per file.

pydicom reads the file; nothing in it is executed. Compressed pixel data that pydicom cannot
decode with what is installed (JPEG lossless, say) is reported as unreadable with the
package to install.
"""

from __future__ import annotations

import warnings
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile

MAGIC_AT = 128  # a DICOM file: a 128-byte preamble, then b"DICM"


def window_to_8bit(values: np.ndarray, ds: Any) -> np.ndarray:
    """Grey values after the modality rescale, mapped to 0-255 by the file's window (its VOI
    LUT, else window centre and width, DICOM PS3.3 C.11.2.1.2), else the stored range."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds).astype(np.float64)
        low, high = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth))
        out = (values - (centre - 0.5)) / max(width - 1.0, 1.0) + 0.5
        low, high = 0.0, 1.0
    else:
        bits = int(ds.get("BitsStored", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
        out = values.astype(np.float64)
    grey = np.clip((out - low) / max(high - low, 1e-12), 0.0, 1.0)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 1.0 - grey
    return np.round(grey * 255).astype(np.uint8)


def _first(value: Any) -> Any:
    """The first of a multi-valued element (of several windows, the first is the default)."""
    from pydicom.multival import MultiValue

    return value[0] if isinstance(value, MultiValue) else value


def read(fp: IO[bytes]) -> Any:
    """The DICOM dataset ``fp`` holds, its pixel data read but not decoded.

    Raises OSError, saying why, for a damaged file, a file with no image or several frames."""
    try:
        import pydicom
    except ImportError:  # pragma: no cover - a core dependency; the torch-free runtime may lack it
        raise OSError("reading DICOM needs pydicom: pip install pydicom") from None
    try:
        with warnings.catch_warnings():  # damage is reported below, or when decoding
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp)
    except Exception as e:  # pydicom raises many types on a damaged file
        raise OSError(f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
        raise OSError("a DICOM file without image pixels (a report or a directory)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise OSError(
            f"a DICOM file of {frames} frames (a series or a loop); headstart learns from one "
            "image per file: save the frame to learn from as its own file"
        )
    return ds


def decode(ds: Any) -> np.ndarray:
    """The 8-bit pixels (``HxW`` grey or ``HxWx3`` RGB) of a dataset from :func:`read`.

    Raises OSError for pixel data this installation cannot decompress, or damaged."""
    from pydicom.pixels import apply_modality_lut

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as e:  # missing decoder plugins raise RuntimeError, damaged data others
        syntax = ds.file_meta.get("TransferSyntaxUID")
        raise OSError(
            f"its pixel data ({getattr(syntax, 'name', syntax)}) could not be decoded: {e}. "
            "JPEG lossless and JPEG-LS need pip install pylibjpeg pylibjpeg-libjpeg"
        ) from None
    if pixels.ndim == 3:  # colour: pydicom has converted YBR to RGB
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.round(pixels.astype(np.float64) * 255 / (2**bits - 1)).astype(np.uint8)
    return window_to_8bit(apply_modality_lut(pixels, ds), ds)


def _accept(prefix: bytes) -> bool:
    """Pillow sees only the first 16 bytes, and the DICM mark is at 128: ``_open`` checks."""
    return True


class DicomImageFile(ImageFile.ImageFile):
    """A DICOM file as a Pillow image: read on open, decoded and windowed on load."""

    format = "DICOM"
    format_description = "DICOM medical image"

    def _open(self) -> None:
        assert self.fp is not None
        self.fp.seek(MAGIC_AT)
        if self.fp.read(4) != b"DICM":
            raise SyntaxError("not a DICOM file")
        self.fp.seek(0)
        self._dataset = read(self.fp)
        self._mode = "RGB" if int(self._dataset.get("SamplesPerPixel", 1) or 1) == 3 else "L"
        self._size = (int(self._dataset.Columns), int(self._dataset.Rows))

    def load(self) -> Any:
        """Decode the pixels (once, after the size checks that opening allows), then load as
        Pillow does."""
        if getattr(self, "_dataset", None) is not None:
            pixels, self._dataset = decode(self._dataset), None
            if pixels.shape[:2] != self.size[::-1]:
                raise OSError(f"pixel data of shape {pixels.shape} for a {self.size} image")
            self.im = Image.fromarray(pixels).im
        return super().load()


Image.preinit()  # JPEG, PNG, BMP, GIF, PPM first: the common files never try this plugin
Image.register_open(DicomImageFile.format, DicomImageFile, _accept)
Image.register_extensions(DicomImageFile.format, [".dcm", ".dicom"])
Image.register_mime(DicomImageFile.format, "application/dicom")
