"""Data: folder scanning and audit, splits, image loading and transforms."""

from headstart.data.augment import PRESETS, TTA_VIEWS, train_transform, tta_transform
from headstart.data.dataset import ImageDataset, pass_generator
from headstart.data.scan import FolderScan, Sample, audit_image, scan_folder
from headstart.data.split import DataSplit, load_split, load_table_split, stratified_split
from headstart.data.table import (
    DEFAULT_TASK,
    MISSING,
    LabelTable,
    read_labels_csv,
    task_label,
    task_labels,
)
from headstart.data.transforms import eval_transform
from headstart.imaging import load_rgb, to_rgb

__all__ = [
    "DEFAULT_TASK",
    "MISSING",
    "PRESETS",
    "TTA_VIEWS",
    "DataSplit",
    "FolderScan",
    "ImageDataset",
    "LabelTable",
    "Sample",
    "audit_image",
    "eval_transform",
    "load_rgb",
    "load_split",
    "load_table_split",
    "pass_generator",
    "read_labels_csv",
    "scan_folder",
    "stratified_split",
    "task_label",
    "task_labels",
    "to_rgb",
    "train_transform",
    "tta_transform",
]
