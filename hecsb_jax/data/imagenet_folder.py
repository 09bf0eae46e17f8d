"""A folder of labelled ImageNet-class images, and evaluation preprocessing.

Layout (that of ../shared/data/imagenet_samples):

    FOLDER/images/<filename>      JPEG (or anything Pillow decodes)
    FOLDER/labels.csv             filename, wnid, class_index, class_name
    FOLDER/split.csv              filename, class_index, split (dev|holdout)

Evaluation preprocessing (as torchvision's Resize(256) + CenterCrop(224),
which the EfficientNet-Lite0 reference figures used): RGB (grayscale and
palette images converted), shorter side resized to 256 with Pillow's
bicubic filter (the longer side truncated to an integer), centre crop
224 x 224, then (x - 127) / 128 as float32. The uint8 crop is what
`load_split_cached` stores, so later runs skip JPEG decoding.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hecsb_jax.data.errors import DataFormatError
from hecsb_jax.edge import preprocess

SPLITS = ("dev", "holdout")
LABEL_COLUMNS = ("filename", "wnid", "class_index", "class_name")
SPLIT_COLUMNS = ("filename", "class_index", "split")
NUM_CLASSES = 1000
RESIZE = 256
CROP = 224
# Bump when the preprocessing changes: it is part of every cache key.
PREPROCESS_VERSION = "rgb-short256-bicubic-center224-uint8-v1"


class Example(NamedTuple):
  """One labelled image: its path and class index (0-999)."""

  path: Path
  label: int


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
  """Rows of a CSV whose header holds at least `columns`."""
  if not path.is_file():
    raise FileNotFoundError(
        f"{path}: file not found (expected a CSV with"
        f" columns {', '.join(columns)})"
    )
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
      raise DataFormatError(
          f"{path}: expected columns {', '.join(columns)}; header is"
          f" {', '.join(header) or '(empty)'} (missing {', '.join(missing)})"
      )
    return list(reader)


def _class_index(value: str, path: Path, line: int) -> int:
  try:
    index = int(value)
  except ValueError:
    index = -1
  if not 0 <= index < NUM_CLASSES:
    raise DataFormatError(
        f"{path}:{line}: expected class_index in"
        f" 0..{NUM_CLASSES - 1}, found {value!r}"
    )
  return index


def _by_filename(rows, path: Path) -> dict[str, dict[str, str]]:
  out = {}
  for line, row in enumerate(rows, start=2):
    name = row["filename"]
    if name in out:
      raise DataFormatError(f"{path}:{line}: filename {name!r} listed twice")
    row["class_index"] = _class_index(row["class_index"], path, line)
    row["line"] = line
    out[name] = row
  return out


def read_split(folder: str | os.PathLike, split: str) -> list[Example]:
  """The labelled images of one split, in labels.csv order.

  Args:
    folder: a folder in the layout of the module docstring.
    split: "dev", "holdout", or "all" (both).

  Returns:
    [Example(path, label)].

  Raises:
    FileNotFoundError: the folder, images/, a CSV or a listed image is
      missing (the message names it and, for an image, the CSV line).
    DataFormatError: a CSV lacks a column, has a bad class index or split
      name, or labels.csv and split.csv disagree.
  """
  if split not in SPLITS + ("all",):
    raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
  folder = Path(folder)
  images = folder / "images"
  for d in (folder, images):
    if not d.is_dir():
      raise FileNotFoundError(
          f"{d}: folder not found (expected images/, labels.csv and"
          " split.csv in the imagenet_samples layout)"
      )
  labels_csv, split_csv = folder / "labels.csv", folder / "split.csv"
  labels = _by_filename(_read_csv(labels_csv, LABEL_COLUMNS), labels_csv)
  splits = _by_filename(_read_csv(split_csv, SPLIT_COLUMNS), split_csv)
  for name, row in splits.items():
    where = f"{split_csv}:{row['line']}"
    if row["split"] not in SPLITS:
      raise DataFormatError(
          f"{where}: expected split dev or holdout, found {row['split']!r}"
      )
    if name not in labels:
      raise DataFormatError(f"{where}: {name!r} is not in {labels_csv}")
    if row["class_index"] != labels[name]["class_index"]:
      raise DataFormatError(
          f"{where}: class_index {row['class_index']} but {labels_csv} says"
          f" {labels[name]['class_index']} for {name!r}"
      )
  examples = []
  for name, row in labels.items():
    if name not in splits:
      raise DataFormatError(
          f"{labels_csv}:{row['line']}: {name!r} has no row in {split_csv}"
      )
    if split != "all" and splits[name]["split"] != split:
      continue
    path = images / name
    if not path.is_file():
      raise FileNotFoundError(
          f"{path}: image not found (listed in {labels_csv}:{row['line']})"
      )
    examples.append(Example(path, row["class_index"]))
  return examples


def decode_center_crop(
    path: str | os.PathLike, resize: int = RESIZE, crop: int = CROP
) -> np.ndarray:
  """Decodes an image, shorter side to `resize` (bicubic), centre `crop`.

  Args:
    path: an image file Pillow can read.
    resize: length of the shorter side after resizing.
    crop: side of the square centre crop (at most `resize`).

  Returns:
    [crop, crop, 3] uint8 RGB.

  Raises:
    FileNotFoundError: no such file.
    DataFormatError: Pillow cannot decode it.
  """
  try:
    # The edge client's function (JAX-free): the pixels a deployed head
    # gets are the ones it was scored on.
    return preprocess.preprocess_file(path, resize, crop, "bicubic")
  except preprocess.ImageDecodeError as e:
    raise DataFormatError(str(e)) from e


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32 (x - 127) / 128, the model's input."""
  return (images.astype(np.float32) - 127.0) / 128.0


def preprocess_eval(path: str | os.PathLike) -> np.ndarray:
  """One image file -> [224, 224, 3] float32 model input."""
  return normalize(decode_center_crop(path))


def decode_all(examples, num_workers: int = 2) -> np.ndarray:
  """`decode_center_crop` of every example -> [N, 224, 224, 3] uint8.

  Pillow releases the GIL while decoding and resizing, so threads overlap.
  """
  out = np.empty((len(examples), CROP, CROP, 3), np.uint8)
  with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
    for i, image in enumerate(
        pool.map(lambda e: decode_center_crop(e.path), examples)
    ):
      out[i] = image
  return out


def cache_key(examples) -> str:
  """Hex digest of the file list (name, size, label) and preprocessing."""
  spec = {
      "preprocess": PREPROCESS_VERSION,
      "files": [
          [e.path.name, e.path.stat().st_size, e.label] for e in examples
      ],
  }
  return hashlib.sha256(json.dumps(spec).encode()).hexdigest()


def load_split_cached(
    folder: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike,
    num_workers: int = 2,
) -> tuple[np.ndarray, np.ndarray, list[Example]]:
  """A split's preprocessed uint8 crops, decoded once then read from cache.

  The cache file, `cache_dir/imagenet_folder-<split>-<key>.npy`, is keyed by
  `cache_key`: another file list, changed file sizes or new preprocessing
  get a new file. A cache that cannot be read is decoded again.

  Args:
    folder: as `read_split`.
    split: as `read_split`.
    cache_dir: where cache files go (created if needed).
    num_workers: decoding threads on a cache miss.

  Returns:
    (images [N, 224, 224, 3] uint8, labels [N] int32, examples).
  """
  examples = read_split(folder, split)
  labels = np.array([e.label for e in examples], np.int32)
  cache_dir = Path(cache_dir)
  path = cache_dir / f"imagenet_folder-{split}-{cache_key(examples)[:20]}.npy"
  want = (len(examples), CROP, CROP, 3)
  if path.is_file():
    try:
      images = np.load(path, allow_pickle=False)
      if images.shape == want and images.dtype == np.uint8:
        return images, labels, examples
    except (OSError, ValueError, EOFError):
      pass
  images = decode_all(examples, num_workers)
  cache_dir.mkdir(parents=True, exist_ok=True)
  # Written aside then renamed: an interrupted run leaves no partial cache.
  tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
  np.save(tmp, images)
  os.replace(tmp, path)
  return images, labels, examples
