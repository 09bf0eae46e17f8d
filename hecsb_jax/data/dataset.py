"""The dataset container shared by all loaders, and the loader registry.

Every loader returns an `ImageDataset` of flattened 28x28 images in [0, 1], so
the trainer and the experiments never care where the pixels came from. Loaders
register themselves by (dataset name, source) with `register_loader`;
`load_dataset` is the one entry point the experiments call.
"""

import os
from typing import Callable, NamedTuple

import numpy as np

IMAGE_SHAPE = (28, 28)
SOURCES = ("local", "tfds")

PathLike = str | os.PathLike


class Split(NamedTuple):
  """One split of a dataset.

  Attributes:
    images: [N, 784] float32 in [0, 1]; row-major flattened 28x28 images.
    labels: [N] int32 class index.
  """

  images: np.ndarray
  labels: np.ndarray


class ImageDataset(NamedTuple):
  """A dataset with fixed train/val/test splits.

  Attributes:
    name: "mnist" or "omniglot".
    train: training split.
    val: validation split (model selection only).
    test: test split (reported figures only).
    image_shape: (28, 28), the shape the 784 pixels unflatten to.
  """

  name: str
  train: Split
  val: Split
  test: Split
  image_shape: tuple


# (name, source) -> loader(data_dir) -> ImageDataset.
_LOADERS: dict[tuple[str, str], Callable[..., ImageDataset]] = {}


def register_loader(name: str, source: str):
  """Decorator: registers `fn(data_dir) -> ImageDataset` for (name, source)."""
  if source not in SOURCES:
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")

  def decorator(fn):
    if (name, source) in _LOADERS:
      raise ValueError(f"a loader for ({name!r}, {source!r}) already exists")
    _LOADERS[(name, source)] = fn
    return fn

  return decorator


def dataset_names() -> tuple[str, ...]:
  """Names `load_dataset` accepts, sorted."""
  return tuple(sorted({name for name, _ in _LOADERS}))


def load_dataset(
    name: str, data_dir: PathLike | None = None, source: str = "local"
) -> ImageDataset:
  """Loads a dataset by name.

  Args:
    name: "mnist" or "omniglot".
    data_dir: for source="local", the folder that holds `mnist/` and
      `omniglot/` (e.g. ../shared/data), or directly the folder that holds that
      dataset's files (the four IDX files for MNIST, the two npz files for
      Omniglot). Required there. For source="tfds", passed to
      tensorflow-datasets as its `data_dir` (None: its default).
    source: "local" (files on disk) or "tfds" (tensorflow-datasets, which
      downloads on first use). There is no fallback from one to the other.

  Returns:
    The dataset with its train/val/test splits.

  Raises:
    ValueError: unknown name or source, or source="local" without data_dir.
    FileNotFoundError: a file the loader needs is missing (message names it).
    DataFormatError: a file is truncated, corrupt or of the wrong format.
    ImportError: source="tfds" without tensorflow-datasets installed.
  """
  if source not in SOURCES:
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
  if (name, source) not in _LOADERS:
    raise ValueError(
        f"unknown dataset {name!r}; expected one of {dataset_names()}"
    )
  if source == "local" and data_dir is None:
    raise ValueError(
        f"load_dataset({name!r}, source='local') needs data_dir: the folder"
        f" that holds {name}/ (e.g. ../shared/data)"
    )
  return _LOADERS[(name, source)](data_dir)


def resolve_local_dir(
    data_dir: PathLike, name: str, marker_files: tuple[str, ...]
) -> str:
  """Finds the folder that holds one dataset's files.

  Args:
    data_dir: either the folder that holds `<name>/`, or that folder itself.
    name: dataset name, also the subfolder name ("mnist").
    marker_files: file names whose presence in `data_dir` means it is the
      dataset folder itself.

  Returns:
    `data_dir/name` if it is a folder, else `data_dir` if it holds one of
    `marker_files`.

  Raises:
    FileNotFoundError: neither; the message names both places looked at.
  """
  root = os.fspath(data_dir)
  sub = os.path.join(root, name)
  if os.path.isdir(sub):
    return sub
  if any(os.path.exists(os.path.join(root, f)) for f in marker_files):
    return root
  raise FileNotFoundError(
      f"no {name} data under {root!r}: expected a folder {sub!r} or the"
      f" {name} files ({', '.join(marker_files)}) directly in {root!r}"
  )
