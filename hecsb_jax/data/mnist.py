"""MNIST from the four standard IDX files, or from tensorflow-datasets.

IDX format (LeCun & Cortes): a 4-byte magic (two zero bytes, a type code with
0x08 = unsigned byte, the number of dims), so 0x00000803 for the image file
and 0x00000801 for the label file; then one big-endian uint32 per dimension;
then the raw bytes in row-major order. We parse it with numpy
and check every field, because a truncated download otherwise shows up as a
silently short training set.

Splits (the usual 50k/10k/10k): train = the first 5/6 of the official training
file (50,000 images), val = its last 1/6 (10,000), test = the official test
file. Pixels are divided by 255.
"""

import gzip
import os
import zlib

import numpy as np

from hecsb_jax.data import dataset
from hecsb_jax.data import tfds_reader
from hecsb_jax.data.errors import DataFormatError

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims: [N, rows, cols].
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim: [N].
NUM_CLASSES = 10

# (role, file name without .gz); the .gz file is preferred when both exist.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_file(directory: str, stem: str) -> str:
  """Returns the path of `stem.gz` or `stem` in `directory`."""
  for candidate in (stem + ".gz", stem):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f"MNIST file missing: expected {os.path.join(directory, stem + '.gz')!r}"
      f" (or the uncompressed {stem!r}) in {directory!r}, one of the four"
      " standard IDX files"
  )


def _read_bytes(path: str) -> bytes:
  """Reads a file, gunzipping `.gz` files; corrupt gzip -> DataFormatError."""
  if not path.endswith(".gz"):
    with open(path, "rb") as f:
      return f.read()
  try:
    with gzip.open(path, "rb") as f:
      return f.read()
  except (EOFError, OSError, zlib.error) as e:
    # EOFError: truncated stream; BadGzipFile (an OSError): not gzip;
    # zlib.error: corrupt deflate data.
    raise DataFormatError(
        f"{path!r} is not a complete gzip file ({type(e).__name__}: {e});"
        " expected a gzip-compressed MNIST IDX file"
    ) from e


def parse_idx(data: bytes, magic: int, path: str) -> np.ndarray:
  """Parses an unsigned-byte IDX file.

  Args:
    data: the (decompressed) file content.
    magic: the expected magic number (IMAGES_MAGIC or LABELS_MAGIC); its low
      byte is the number of dimensions.
    path: for error messages.

  Returns:
    uint8 array of the shape the header declares.

  Raises:
    DataFormatError: wrong magic, short header, or payload length that does
      not match the declared dimensions.
  """
  ndim = magic & 0xFF
  header_bytes = 4 * (1 + ndim)
  if len(data) < header_bytes:
    raise DataFormatError(
        f"{path!r} is {len(data)} bytes, too short for an IDX header"
        f" ({header_bytes} bytes expected)"
    )
  header = np.frombuffer(data, dtype=">u4", count=1 + ndim)
  if int(header[0]) != magic:
    raise DataFormatError(
        f"{path!r} has IDX magic 0x{int(header[0]):08x}; expected"
        f" 0x{magic:08x} (unsigned bytes, {ndim} dims)"
    )
  dims = tuple(int(d) for d in header[1:])
  expected = int(np.prod(dims, dtype=np.int64))
  payload = len(data) - header_bytes
  if payload != expected:
    raise DataFormatError(
        f"{path!r} holds {payload} data bytes but its header declares dims"
        f" {dims} = {expected} bytes (truncated or corrupt file)"
    )
  return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _read_images(path: str) -> np.ndarray:
  images = parse_idx(_read_bytes(path), IMAGES_MAGIC, path)
  if images.shape[1:] != dataset.IMAGE_SHAPE:
    raise DataFormatError(
        f"{path!r} holds images of shape {images.shape[1:]}; expected"
        f" {dataset.IMAGE_SHAPE}"
    )
  return images


def _read_labels(path: str) -> np.ndarray:
  labels = parse_idx(_read_bytes(path), LABELS_MAGIC, path)
  if labels.size and labels.max() >= NUM_CLASSES:
    raise DataFormatError(
        f"{path!r} holds label {labels.max()}; expected labels 0..9"
    )
  return labels


def _check_counts(images, labels, images_path, labels_path):
  if len(images) != len(labels):
    raise DataFormatError(
        f"{images_path!r} holds {len(images)} images but {labels_path!r}"
        f" holds {len(labels)} labels; expected equal counts"
    )


def _to_split(images: np.ndarray, labels: np.ndarray) -> dataset.Split:
  """[N, 28, 28] uint8, [N] int -> Split of [N, 784] float32 / 255, int32."""
  return dataset.Split(
      images=images.reshape(len(images), -1).astype(np.float32)
      / np.float32(255),
      labels=labels.astype(np.int32),
  )


def mnist_from_arrays(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    source: str = "arrays",
) -> dataset.ImageDataset:
  """Builds the 50k/10k/10k MNIST dataset from raw uint8 arrays.

  Args:
    train_images: [N, 28, 28] (or [N, 28, 28, 1]) uint8, official train set.
    train_labels: [N] integer.
    test_images: [T, 28, 28] (or [T, 28, 28, 1]) uint8.
    test_labels: [T] integer.
    source: where the arrays came from, for error messages.

  Returns:
    train = first N - N // 6 images, val = last N // 6 (10,000 of 60,000),
    test = all T; images [., 784] float32 in [0, 1], labels int32.

  Raises:
    DataFormatError: wrong dtype, shape or counts, or N < 6.
  """
  splits = {}
  for name, images, labels in (
      ("train", train_images, train_labels),
      ("test", test_images, test_labels),
  ):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 4 and images.shape[-1] == 1:
      images = images[..., 0]
    if images.dtype != np.uint8 or images.shape[1:] != dataset.IMAGE_SHAPE:
      raise DataFormatError(
          f"{source}: {name} images are {images.dtype} {images.shape};"
          " expected uint8 [N, 28, 28]"
      )
    if labels.shape != images.shape[:1]:
      raise DataFormatError(
          f"{source}: {len(images)} {name} images but labels of shape"
          f" {labels.shape}; expected one label per image"
      )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
      raise DataFormatError(
          f"{source}: {name} labels span {labels.min()}..{labels.max()};"
          f" expected 0..{NUM_CLASSES - 1}"
      )
    splits[name] = (images, labels)
  n = len(splits["train"][0])
  num_val = n // 6
  if num_val == 0:
    raise DataFormatError(
        f"{source}: {n} training images; need at least 6 to hold out a"
        " validation sixth"
    )
  train_x, train_y = splits["train"]
  return dataset.ImageDataset(
      name="mnist",
      train=_to_split(train_x[: n - num_val], train_y[: n - num_val]),
      val=_to_split(train_x[n - num_val :], train_y[n - num_val :]),
      test=_to_split(*splits["test"]),
      image_shape=dataset.IMAGE_SHAPE,
  )


def load_mnist_idx(directory: str | os.PathLike) -> dataset.ImageDataset:
  """Loads MNIST from a folder holding the four standard IDX files.

  Args:
    directory: folder with train-images-idx3-ubyte.gz,
      train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
      t10k-labels-idx1-ubyte.gz (or the same names without .gz).

  Returns:
    The 50k/10k/10k dataset (see module docstring).

  Raises:
    FileNotFoundError: a file is missing; the message names it.
    DataFormatError: a file is truncated, corrupt, or not an IDX file of the
      expected kind; the message names it.
  """
  directory = os.fspath(directory)
  paths = {role: _find_file(directory, stem) for role, stem in FILES.items()}
  arrays = {}
  for split in ("train", "test"):
    images_path = paths[f"{split}_images"]
    labels_path = paths[f"{split}_labels"]
    images = _read_images(images_path)
    labels = _read_labels(labels_path)
    _check_counts(images, labels, images_path, labels_path)
    arrays[split] = (images, labels)
  return mnist_from_arrays(*arrays["train"], *arrays["test"], source=directory)


def load_mnist_tfds(
    data_dir: str | os.PathLike | None = None,
) -> dataset.ImageDataset:
  """Loads MNIST through tensorflow-datasets (downloads on first use).

  The 50k/10k split is taken in tfds's stored order, which is deterministic
  but not the order of the official file: the tfds val set is a different
  10,000 images than `load_mnist_idx`'s.

  Args:
    data_dir: tfds data_dir; None uses tfds's default (~/tensorflow_datasets).

  Returns:
    The 50k/10k/10k dataset.

  Raises:
    ImportError: tensorflow-datasets (optional extra `data`) is missing.
  """
  arrays = tfds_reader.read_splits(
      "mnist", ("train", "test"), ("image", "label"), data_dir=data_dir
  )
  return mnist_from_arrays(
      arrays["train"]["image"],
      arrays["train"]["label"],
      arrays["test"]["image"],
      arrays["test"]["label"],
      source=f"tfds mnist (data_dir={data_dir})",
  )


@dataset.register_loader("mnist", "local")
def _load_local(data_dir):
  stems = tuple(FILES.values())
  markers = tuple(s + ".gz" for s in stems) + stems
  return load_mnist_idx(dataset.resolve_local_dir(data_dir, "mnist", markers))


dataset.register_loader("mnist", "tfds")(load_mnist_tfds)
