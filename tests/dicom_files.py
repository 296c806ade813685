"""DICOM files as modalities write them, for the tests: uncompressed with any tags, or one
compressed frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def dataset(syntax: str) -> Dataset:
    """An empty secondary-capture dataset with its file meta, pixel data in ``syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_dicom(
    path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **tags
) -> Path:
    """A DICOM file as a modality writes one: file meta, the pixels, then ``tags``."""
    ds = dataset(ExplicitVRLittleEndian)
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits)
    for name, value in tags.items():
        setattr(ds, name, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated(path: Path, pixels: np.ndarray, syntax: str, frame: bytes) -> Path:
    """An 8-bit grey DICOM whose pixel data is one compressed ``frame`` (RSNA's are JPEG)."""
    from pydicom.encaps import encapsulate

    ds = dataset(syntax)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path
