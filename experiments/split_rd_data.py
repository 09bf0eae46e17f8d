"""The images of the split rate-accuracy experiment, decoded once.

    folder (imagenet_samples layout) / extra_images ─► file lists, checked
      before anything is decoded ─► uint8 224×224 centre crops, cached
      under the list's hash (`imagenet_folder.cache_key`)
    tfds imagenet2012 ─► streamed (never all in memory)

Training takes dev (+ extra_images, unlabelled = -1); evaluation a folder's
holdout split (or, with --tune, the part of dev held out of training).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.data.tfds_reader import import_tfds


@dataclasses.dataclass
class Images:
  """Decoded centre crops and what identifies them."""

  images: np.ndarray  # [N, 224, 224, 3] uint8
  labels: np.ndarray  # [N] int32, -1 = unlabelled
  data_id: str  # hash of the file list and preprocessing


# (uint8 [n, S, S, 3] images, int32 [n] labels) pieces of an evaluation set.
Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def _cached_crops(examples, cache_dir: Path, tag: str) -> np.ndarray:
  """`imagenet_folder.decode_all` of a file list, decoded once and cached
  under the list's `cache_key` (the scheme of `load_split_cached`, for
  lists that are not a whole split: a subset, extra_images)."""
  key = imagenet_folder.cache_key(examples)[:20]
  path = cache_dir / f"split_rd-{tag}-{key}.npy"
  want = (len(examples), imagenet_folder.CROP, imagenet_folder.CROP, 3)
  if path.is_file():
    try:
      images = np.load(path, allow_pickle=False)
      if images.shape == want and images.dtype == np.uint8:
        return images
    except (OSError, ValueError, EOFError):
      pass
  images = imagenet_folder.decode_all(examples, num_workers=2)
  cache_dir.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
  np.save(tmp, images)
  os.replace(tmp, path)
  return images


@dataclasses.dataclass
class ImageList:
  """Files to decode, listed (and checked) before anything is decoded."""

  examples: list  # [imagenet_folder.Example]
  tag: str  # cache file prefix
  # (folder, split) when these come from a whole split decoded by
  # `load_split_cached`; then `indices` (None: all) picks them from it.
  whole_split: tuple | None = None
  indices: list[int] | None = None


def split_list(folder, split: str, limit: int,
               keep: Callable[[imagenet_folder.Example], bool] | None = None
               ) -> ImageList:
  """The images of a split of an imagenet_samples-layout folder for which
  ``keep`` holds, or only the first ``limit`` of them (0: all).

  A limited list is decoded (and cached) alone; otherwise the whole split
  is, once, and the list is picked from it.
  """
  examples = imagenet_folder.read_split(folder, split)
  indices = [i for i, e in enumerate(examples) if keep is None or keep(e)]
  tag = split if keep is None else f"{split}-part"
  if limit:
    return ImageList([examples[i] for i in indices[:limit]], tag)
  return ImageList([examples[i] for i in indices], tag, (folder, split),
                   None if keep is None else indices)


def extra_list(folder, limit: int) -> ImageList:
  """extra_images (labels.csv + images/; label -1 = no ImageNet label)."""
  folder = Path(folder)
  examples = pipeline.read_image_list(folder / "labels.csv",
                                      folder / "images")
  return ImageList(examples[:limit] if limit else examples, "extra")


def data_id(lists: list[ImageList]) -> str:
  """Hash of every file list (names, sizes, labels) and preprocessing."""
  keys = "".join(imagenet_folder.cache_key(l.examples) for l in lists)
  return hashlib.sha256(keys.encode()).hexdigest()


def decode(lists: list[ImageList], cache_dir) -> Images:
  """The lists' crops, concatenated, decoded through the cache."""
  cache_dir = Path(cache_dir)
  images = []
  for l in lists:
    if l.whole_split:
      whole = imagenet_folder.load_split_cached(*l.whole_split, cache_dir)[0]
      images.append(whole if l.indices is None else whole[l.indices])
    else:
      images.append(_cached_crops(l.examples, cache_dir, l.tag))
  labels = np.array([e.label for l in lists for e in l.examples], np.int32)
  return Images(np.concatenate(images), labels, data_id(lists))


def folder_split(folder, split: str, limit: int, cache_dir) -> Images:
  """`split_list`, decoded."""
  return decode([split_list(folder, split, limit)], cache_dir)


def tuning_part(config) -> Callable[[imagenet_folder.Example], bool]:
  """--tune: the training-split images held out to score settings on
  (class_index % 5 == data.tune_remainder; holdout is % 5 == 4)."""
  return lambda e: e.label % 5 == config.data.tune_remainder


def tune_split_name(config) -> str:
  """How results name the --tune images: "dev-tune" for the first fold
  (as before --tune-fold), "dev-tune-fold<K>" for another."""
  name = f"{config.data.train_split}-tune"
  suffix = split_rd_config.tune_fold_suffix(config.data.tune_remainder)
  return f"{name}-{suffix}" if suffix else name


def training_lists(config, data_dir, tune: bool = False
                   ) -> list[ImageList]:
  """dev (+ extra_images): what stage 1 and stage 2 train on; with
  ``tune``, dev without its tuning part."""
  part = tuning_part(config)
  lists = [split_list(Path(data_dir) / config.data.samples_dir,
                      config.data.train_split,
                      config.data.train_limit_per_set,
                      (lambda e: not part(e)) if tune else None)]
  if config.data.extra_dir:
    lists.append(extra_list(Path(data_dir) / config.data.extra_dir,
                            config.data.train_limit_per_set))
  return lists


# ------------------------------------------------------------- tfds data


def tfds_source(split: str, data_dir, limit: int = 0
                ) -> pipeline.TfdsSource:
  """The first ``limit`` (0: all) examples of a split of the prepared tfds
  `imagenet2012` under ``data_dir``.

  Raises:
    FileNotFoundError: it is not prepared there (one line, naming the
      folder and how to prepare it).
  """
  tfds = import_tfds()
  try:
    return pipeline.imagenet2012_source(split, data_dir, limit)
  except (AssertionError, tfds.core.DatasetNotFoundError) as e:
    # tfds says "manual directory ... does not exist" for an unprepared
    # imagenet2012: the tars are a manual download.
    raise FileNotFoundError(
        f"{data_dir}: no prepared tfds imagenet2012 (split {split!r});"
        " prepare it once with hecsb_jax.data.imagenet_pipeline."
        "prepare_imagenet2012(DATA_DIR, MANUAL_DIR), MANUAL_DIR holding"
        f" {' and '.join(pipeline.IMAGENET2012_TARS)}"
        f" ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    ) from e


def tfds_split_name(split: str, limit: int) -> str:
  """How results name the first ``limit`` examples of a split (tfds's
  slice syntax)."""
  return f"{split}[:{limit}]" if limit else split


def tfds_data_id(split: str, source) -> str:
  """What identifies a tfds training split: its name and size."""
  return hashlib.sha256(
      f"tfds imagenet2012 {split} {len(source)}".encode()).hexdigest()


def tfds_chunks(source, config) -> Chunks:
  """The evaluation split streamed in batches of uint8 centre crops
  (resize to 256/224 of the crop side, config.data.interpolation)."""
  crop = config.data.image_size
  resize = int(round(crop * pipeline.RESIZE / pipeline.IMAGE_SIZE))

  def chunks():
    for batch in pipeline.eval_batches(
        source, batch_size=config.eval_batch_size, norm=None, resize=resize,
        crop=crop, interpolation=config.data.interpolation):
      yield batch["image"], batch["label"]

  return chunks
