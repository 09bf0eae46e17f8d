"""Reads whole splits of a tensorflow-datasets dataset into numpy.

tensorflow-datasets is an optional extra (`hecsb_jax[data]`), imported only
here and only when called. We read through `tfds.data_source` (ArrayRecord),
which needs no TensorFlow once the dataset is prepared; preparing it the first
time (download + conversion) does need TensorFlow. A missing module surfaces as
an ImportError that says what to install, never as a switch to other data.
"""

import os
from typing import Any, Callable

import numpy as np

from hecsb_jax.data.errors import DataFormatError

_INSTALL_HINT = "pip install 'hecsb_jax[data]'"


def import_tfds() -> Any:
  """Returns `tensorflow_datasets`, or raises an ImportError saying how."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "source='tfds' needs tensorflow-datasets, which is not installed:"
        f" {_INSTALL_HINT} (or use source='local' with files on disk)"
    ) from e
  return tfds


def read_splits(
    name: str,
    splits: tuple[str, ...],
    keys: tuple[str, ...],
    data_dir: str | os.PathLike | None = None,
    convert: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """Reads every example of some splits of a tfds dataset.

  Args:
    name: tfds dataset name ("mnist", "omniglot").
    splits: split names to read ("train", "test").
    keys: feature keys to keep ("image", "label").
    data_dir: tfds data_dir (None: tfds's default). tfds downloads and
      prepares the dataset there on first use.
    convert: optional {key: fn} applied to each example's value as it is
      read (keeps peak memory at one converted copy of the split).

  Returns:
    {split: {key: array stacked over the split's examples in tfds order}}.

  Raises:
    ImportError: tensorflow-datasets, or a module it needs, is missing.
  """
  tfds = import_tfds()
  if data_dir is not None:
    data_dir = os.fspath(data_dir)
  try:
    sources = tfds.data_source(name, split=list(splits), data_dir=data_dir)
  except ModuleNotFoundError as e:
    # tfds imports TensorFlow (and, in 4.9.10 on Python >= 3.11, the
    # undeclared importlib_resources) lazily while preparing a dataset.
    raise ImportError(
        f"tensorflow-datasets could not prepare {name!r} in"
        f" {data_dir or 'its default data_dir'}: it needs the module"
        f" {e.name!r}, which is not installed (pip install {e.name})"
    ) from e
  out = {}
  for split, source in zip(splits, sources):
    out[split] = _read_all(source, keys, convert or {})
  return out


def _read_all(source, keys, convert):
  """Stacks every example of one data source into preallocated arrays."""
  n = len(source)
  columns = {}
  # Index one example at a time: `__getitems__` would batch the reads, but
  # tfds's own mock (tfds.testing.mock_data) does not support it.
  for i in range(n):
    example = source[i]
    for key in keys:
      value = np.asarray(example[key])
      if key in convert:
        value = convert[key](value)
      if key not in columns:
        columns[key] = np.empty((n,) + value.shape, value.dtype)
      columns[key][i] = value
  if not columns:
    raise DataFormatError(f"tfds data source {source!r} has no examples")
  return columns
