"""Evaluation preprocessing: shorter side to ``resize``, centre ``crop``.

torchvision's Resize(256) + CenterCrop(224), which the EfficientNet-Lite0
reference figures used: the shorter side becomes ``resize`` and the longer
side is scaled by the same factor and truncated (int(), not round()); the
crop box's corner is rounded. Pillow + numpy only, no JAX: the edge client
runs it on the device, and `hecsb_jax.data` calls the same functions, so a
head sees on the device exactly the pixels it was evaluated on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

RESIZE = 256
CROP = 224
RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageDecodeError(ValueError):
  """A file exists but is not an image Pillow can decode (path named)."""


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
  """(width, height) with the shorter side ``resize``, the longer truncated."""
  if width <= height:
    return resize, int(resize * height / width)
  return int(resize * width / height), resize


def resize_center_crop(
    img: Image.Image,
    resize: int = RESIZE,
    crop: int = CROP,
    interpolation: str = "bicubic",
) -> np.ndarray:
  """Shorter side to ``resize``, centre ``crop`` -> [crop, crop, 3] uint8.

  Args:
    img: an RGB image.
    resize: length of the shorter side after resizing.
    crop: side of the square centre crop (at most ``resize``).
    interpolation: "bicubic" or "bilinear" (Pillow's filters).

  Raises:
    ValueError: unknown ``interpolation`` or ``crop`` > ``resize``.
  """
  if interpolation not in RESAMPLE:
    raise ValueError(f"interpolation must be one of {sorted(RESAMPLE)}, got"
                     f" {interpolation!r}")
  if crop > resize:
    raise ValueError(f"crop {crop} is larger than resize {resize}")
  size = resized_size(*img.size, resize)
  img = img.resize(size, RESAMPLE[interpolation])
  left = int(round((size[0] - crop) / 2.0))
  top = int(round((size[1] - crop) / 2.0))
  return np.asarray(img.crop((left, top, left + crop, top + crop)), np.uint8)


def load_rgb(path: str | os.PathLike,
             draft_shorter_side: int | None = None) -> Image.Image:
  """Decodes an image file to RGB (grayscale and palette converted).

  Args:
    path: a file Pillow reads.
    draft_shorter_side: if given, a JPEG is decoded at the smallest of its
      1/1, 1/2, 1/4, 1/8 scales whose shorter side is still at least this
      (much faster for multi-megapixel photos; training's random crops).

  Raises:
    FileNotFoundError: no such file (named).
    ImageDecodeError: Pillow cannot decode it (named, with Pillow's reason).
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: image not found")
  try:
    with Image.open(path) as img:
      if draft_shorter_side:
        img.draft("RGB", (draft_shorter_side, draft_shorter_side))
      return img.convert("RGB")  # also forces the full decode
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ImageDecodeError(
        f"{path}: expected an image Pillow can decode: {e}") from e


def preprocess_file(
    path: str | os.PathLike,
    resize: int = RESIZE,
    crop: int = CROP,
    interpolation: str = "bicubic",
) -> np.ndarray:
  """`load_rgb` then `resize_center_crop` -> [crop, crop, 3] uint8."""
  return resize_center_crop(load_rgb(path), resize, crop, interpolation)
