"""ImageNet-style input pipeline on grain: augmented training batches and
evaluation batches, from image files, uint8 arrays or tfds `imagenet2012`.

    source (random access: FileSource | ArraySource | TfdsSource)
      │   element {"image": PIL RGB image, "label": int32 (-1 = unlabelled)}
      ├─ train: shuffle(seed_e) ─► random resized crop 224 + flip (rng per
      │         element from seed_e) ─► batch(B, drop remainder) ─► normalize
      └─ eval:  resize shorter side 256 ─► centre crop 224 ─► batch(B)
                ─► normalize
      ▼
    {"image": float32 [B, 224, 224, 3], "label": int32 [B]}

Determinism: epoch e of a run with seed s draws every random choice (the
order and each image's crop and flip) from seed_e, derived from (s, e) by
`numpy.random.SeedSequence`; grain seeds each element's generator from
seed_e and the element's position, so batches do not depend on the number
of decoding threads, and a run resumed at epoch e sees exactly the batches
an uninterrupted one saw. That is what `hecsb_jax.train.trainer.fit`
needs of a streamed ``train(epoch)``; `train_fn` builds one. With several
processes (`hecsb_jax.train.distributed`), ``shard=(index, count)`` makes
each yield its part of every global batch: together, exactly the batches
of one process.

Random resized crop is torchvision's (Szegedy et al. 2015): area fraction
U(0.08, 1), log aspect ratio U(log 3/4, log 4/3), ten tries, then a centre
crop clamped to the ratio range; resized to 224 (bilinear), flipped with
probability ½. Evaluation follows `imagenet_folder.decode_center_crop`
(torchvision's Resize(256) + CenterCrop(224)); the resampling filter is a
parameter (bicubic for the EfficientNet-Lite0 reference figures, bilinear
for torchvision's ResNet-50 weights).

The tfds `imagenet2012` dataset needs a manual download (ILSVRC2012_img_
train.tar and ILSVRC2012_img_val.tar in ``manual_dir``); `prepare_
imagenet2012` converts it once to ArrayRecord, which tfds then reads as a
random-access source without TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import grain.python as grain
import numpy as np
from PIL import Image

from hecsb_jax.data.errors import DataFormatError
from hecsb_jax.data.imagenet_folder import Example
from hecsb_jax.data.tfds_reader import import_tfds
from hecsb_jax.edge import preprocess

IMAGE_SIZE = 224
RESIZE = 256
UNLABELLED = -1
NUM_CLASSES = 1000
IMAGENET2012_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclasses.dataclass(frozen=True)
class Normalization:
  """x_model = (x_uint8 - mean) / std, per RGB channel, in pixel units."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]


# EfficientNet-Lite0 (../shared/data/README.md): (x - 127) / 128.
EFFICIENTNET_LITE = Normalization((127.0,) * 3, (128.0,) * 3)
# torchvision's ResNet-50 weights: ImageNet mean/std of pixels in [0, 1].
TORCHVISION = Normalization(
    tuple(255.0 * v for v in (0.485, 0.456, 0.406)),
    tuple(255.0 * v for v in (0.229, 0.224, 0.225)),
)
NORMALIZATIONS = {
    "efficientnet_lite0": EFFICIENTNET_LITE,
    "resnet50": TORCHVISION,
}


def normalization(backbone: str) -> Normalization:
  """The input normalization of a backbone by name."""
  if backbone not in NORMALIZATIONS:
    raise ValueError(f"unknown backbone {backbone!r}; expected one of"
                     f" {sorted(NORMALIZATIONS)}")
  return NORMALIZATIONS[backbone]


def normalize(images: np.ndarray, norm: Normalization) -> np.ndarray:
  """uint8 [..., 3] -> float32 (x - mean) / std."""
  mean = np.asarray(norm.mean, np.float32)
  std = np.asarray(norm.std, np.float32)
  return (images.astype(np.float32) - mean) / std


# ------------------------------------------------------------------ lists


def read_image_list(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    filename_column: str = "filename",
    label_column: str = "class_index",
) -> list[Example]:
  """(path, label) of every row of a CSV; label -1 means unlabelled.

  Reads the layout of ../shared/data/extra_images (``labels.csv`` with
  filename, source, class_index, note; images under ``images/``).

  Raises:
    FileNotFoundError: the CSV or a listed image is missing (named, with
      the CSV line).
    DataFormatError: a column is missing or a label is not an integer in
      -1 ... 999 (named with its line).
  """
  csv_path, image_dir = Path(csv_path), Path(image_dir)
  if not csv_path.is_file():
    raise FileNotFoundError(f"{csv_path}: file not found (expected a CSV"
                            f" with columns {filename_column},"
                            f" {label_column})")
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in (filename_column, label_column) if c not in header]
    if missing:
      raise DataFormatError(
          f"{csv_path}: expected columns {filename_column}, {label_column};"
          f" header is {', '.join(header) or '(empty)'}")
    examples = []
    for line, row in enumerate(reader, start=2):
      value = row[label_column]
      try:
        label = int(value)
      except ValueError:
        label = NUM_CLASSES  # reported below
      if not UNLABELLED <= label < NUM_CLASSES:
        raise DataFormatError(f"{csv_path}:{line}: expected {label_column}"
                              f" in -1..{NUM_CLASSES - 1}, found {value!r}")
      path = image_dir / row[filename_column]
      if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found (listed in"
                                f" {csv_path}:{line})")
      examples.append(Example(path, label))
  return examples


# ---------------------------------------------------------------- sources


def decode_image(path: str | os.PathLike,
                 draft_shorter_side: int | None = None) -> Image.Image:
  """Decodes an image file to RGB (grayscale and palette converted).

  Args:
    path: a file Pillow reads.
    draft_shorter_side: if given, a JPEG is decoded at the smallest of its
      1/1, 1/2, 1/4, 1/8 scales whose shorter side is still at least this
      (much faster for multi-megapixel photos).

  Raises:
    FileNotFoundError: no such file (named).
    DataFormatError: Pillow cannot decode it (named, with Pillow's reason).
  """
  try:
    return preprocess.load_rgb(path, draft_shorter_side)
  except preprocess.ImageDecodeError as e:
    raise DataFormatError(str(e)) from e


class FileSource(grain.RandomAccessDataSource):
  """Random access to image files: element i is (decoded image, label)."""

  def __init__(self, examples: Sequence[Example | tuple[Any, int]], *,
               draft_shorter_side: int | None = None):
    """Checks that every file exists (decoding happens on access).

    Args:
      examples: (path, label) pairs; label -1 for unlabelled images.
      draft_shorter_side: see `decode_image`.
    """
    self._paths = [Path(p) for p, _ in examples]
    self._labels = np.asarray([int(l) for _, l in examples], np.int32)
    for path in self._paths:
      if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    self._draft = draft_shorter_side

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, i) -> dict[str, Any]:
    return {"image": decode_image(self._paths[i], self._draft),
            "label": self._labels[i]}

  def __repr__(self) -> str:
    return f"FileSource({len(self)} images)"


class ArraySource(grain.RandomAccessDataSource):
  """Random access to in-memory uint8 images, e.g. a decoded cache."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    """Args: images [N, H, W, 3] uint8; labels [N] integers (-1 allowed)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"expected images uint8 [N, H, W, 3], got"
                       f" {images.dtype} {images.shape}")
    if len(labels) != len(images):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self._images = images
    self._labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, i) -> dict[str, Any]:
    return {"image": Image.fromarray(self._images[i]),
            "label": self._labels[i]}

  def __repr__(self) -> str:
    return f"ArraySource({len(self)} images)"


class TfdsSource(grain.RandomAccessDataSource):
  """A tfds data source (``{"image": uint8 [H, W, 3], "label": int}``),
  or its first ``limit`` examples (0: all)."""

  def __init__(self, source: Any, limit: int = 0):
    self._source = source
    self._len = min(limit, len(source)) if limit else len(source)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i) -> dict[str, Any]:
    if not 0 <= int(i) < self._len:
      raise IndexError(f"index {i} out of range for {self._len} examples")
    example = self._source[int(i)]
    return {"image": Image.fromarray(np.asarray(example["image"], np.uint8)),
            "label": np.int32(example["label"])}

  def __repr__(self) -> str:
    return f"TfdsSource({self._source!r})"


def prepare_imagenet2012(
    data_dir: str | os.PathLike, manual_dir: str | os.PathLike
) -> None:
  """Converts the manually downloaded ILSVRC2012 tars for tfds (once).

  Args:
    data_dir: tfds data_dir to write the prepared dataset to.
    manual_dir: folder holding ILSVRC2012_img_train.tar and
      ILSVRC2012_img_val.tar (from image-net.org; tfds cannot download them).

  Raises:
    FileNotFoundError: a tar file is missing from ``manual_dir`` (named).
  """
  missing = [name for name in IMAGENET2012_TARS
             if not (Path(manual_dir) / name).is_file()]
  if missing:
    raise FileNotFoundError(
        f"{manual_dir}: expected {', '.join(IMAGENET2012_TARS)} (the manual"
        f" download from https://image-net.org); missing {', '.join(missing)}"
    )
  tfds = import_tfds()
  builder = tfds.builder("imagenet2012", data_dir=os.fspath(data_dir),
                         file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir)))


def imagenet2012_source(
    split: str, data_dir: str | os.PathLike | None = None, limit: int = 0
) -> TfdsSource:
  """A prepared tfds `imagenet2012` split ("train", "validation", or a
  slice such as "train[:1%]") as a random-access source; only its first
  ``limit`` examples if ``limit`` (0: all)."""
  tfds = import_tfds()
  source = tfds.data_source(
      "imagenet2012", split=split,
      data_dir=None if data_dir is None else os.fspath(data_dir))
  return TfdsSource(source, limit)


# ------------------------------------------------------------- transforms


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop box (left, top, right, bottom)."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, left + w, top + h
  # Fallback: the whole image, cropped centrally to the nearest ratio.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def train_transform(
    element: dict[str, Any], rng: np.random.Generator, *,
    size: int = IMAGE_SIZE, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
) -> dict[str, np.ndarray]:
  """Random resized crop (bilinear) and horizontal flip -> uint8."""
  img = element["image"]
  box = random_resized_crop_box(img.width, img.height, rng, scale, ratio)
  img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
  if rng.random() < 0.5:
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return {"image": np.asarray(img, np.uint8), "label": element["label"]}


# The evaluation crop is the edge client's own function (JAX-free), so a
# deployed head sees exactly the pixels it was scored on.
resize_center_crop = preprocess.resize_center_crop


# -------------------------------------------------------------- pipelines


def epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
  """(shuffle seed, augmentation seed) of one epoch, from (seed, epoch)."""
  a, b = np.random.SeedSequence([seed, epoch]).generate_state(2)
  return int(a), int(b)


def _batches(ds: grain.MapDataset, batch_size: int, drop_remainder: bool,
             norm: Normalization | None, num_threads: int) -> Iterator[dict]:
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.map(lambda b: {
      "image": b["image"] if norm is None else normalize(b["image"], norm),
      "label": np.asarray(b["label"], np.int32)})
  options = grain.ReadOptions(num_threads=max(1, num_threads),
                              prefetch_buffer_size=2)
  return iter(ds.to_iter_dataset(options))


def train_batches(
    source: grain.RandomAccessDataSource,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    norm: Normalization = EFFICIENTNET_LITE,
    size: int = IMAGE_SIZE,
    scale: tuple[float, float] = (0.08, 1.0),
    num_threads: int = 2,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of augmented training batches (incomplete last one dropped).

  Args:
    source: FileSource, ArraySource or TfdsSource.
    batch_size: B.
    seed: the run's seed.
    epoch: epoch number; with ``seed`` it fixes every random choice.
    norm: the backbone's input normalization.
    size: output side.
    scale: area range of the random crop.
    num_threads: decoding threads (results do not depend on it).
    shard: (index, count): this process's part of each batch when
      ``count`` processes share the training (`jax.process_index()`,
      `jax.process_count()`); B is the global batch size and must be a
      multiple of ``count``.

  Yields:
    {"image": [B / count, size, size, 3] float32, "label": [B / count]
    int32}: the part ``index`` of the global batch.

  Raises:
    ValueError: ``shard`` is not a valid (index, count), or ``count`` does
      not divide B.
  """
  index, count = shard
  if not 0 <= index < count:
    raise ValueError(f"shard must be (index, count) with 0 <= index < count,"
                     f" got {shard}")
  if batch_size % count:
    raise ValueError(f"batch size {batch_size} does not split over {count}"
                     " processes; use a multiple of the process count")
  shuffle_seed, augment_seed = epoch_seeds(seed, epoch)
  ds = grain.MapDataset.source(source).shuffle(seed=shuffle_seed)
  ds = ds.random_map(
      lambda e, rng: train_transform(e, rng, size=size, scale=scale),
      seed=augment_seed)
  # Why the processes' batches add up to the one-process batch: the
  # shuffle and every element's crop and flip depend only on (seed, epoch)
  # and the element's position p in `ds` (grain seeds random_map by
  # position in the unsliced dataset), so all processes see the same
  # `ds`. Global batch k is positions [kB, (k+1)B). Process i keeps
  # positions p = i + count*j; its batch k holds j in [kb, (k+1)b) with
  # b = B / count, i.e. p in [kB, (k+1)B) with p = i (mod count). Over
  # i = 0 .. count-1 that is exactly global batch k. Cutting `ds` to whole
  # global batches first keeps every process at the same number of steps
  # (the global epoch's) and drops the same remainder as one process does.
  ds = ds[: len(ds) // batch_size * batch_size]
  if count > 1:
    ds = ds[index::count]
  return _batches(ds, batch_size // count, True, norm, num_threads)


def eval_batches(
    source: grain.RandomAccessDataSource,
    *,
    batch_size: int,
    norm: Normalization | None = EFFICIENTNET_LITE,
    resize: int = RESIZE,
    crop: int = IMAGE_SIZE,
    interpolation: str = "bicubic",
    num_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
  """Every image once, in order: resize, centre crop (last batch may be
  smaller).

  ``norm=None`` yields the uint8 crops themselves (what an image codec
  encodes before the model sees them).

  Yields:
    {"image": [b, crop, crop, 3] float32 (uint8 if ``norm`` is None),
    "label": [b] int32}, b <= B.
  """
  if interpolation not in _RESAMPLE:
    raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}")
  ds = grain.MapDataset.source(source).map(
      lambda e: {"image": resize_center_crop(e["image"], resize, crop,
                                             interpolation),
                 "label": e["label"]})
  return _batches(ds, batch_size, False, norm, num_threads)


def steps_per_epoch(source: grain.RandomAccessDataSource,
                    batch_size: int) -> int:
  """Full batches per training epoch."""
  return len(source) // batch_size


def train_fn(
    source: grain.RandomAccessDataSource, *, batch_size: int, seed: int,
    **kwargs,
) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
  """``epoch -> batches`` for `fit`'s streamed ``train`` (kwargs as
  `train_batches`, ``shard`` included); pass `steps_per_epoch` alongside
  (global: the same for every shard)."""
  if steps_per_epoch(source, batch_size) == 0:
    raise ValueError(f"{len(source)} images make no batch of {batch_size}")
  return lambda epoch: train_batches(source, batch_size=batch_size,
                                     seed=seed, epoch=epoch, **kwargs)
