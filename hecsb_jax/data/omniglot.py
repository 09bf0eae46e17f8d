"""Omniglot at 28x28, strokes = 1, from the npz files or tensorflow-datasets.

Sources (Lake et al., Science 2015):
- npz (`images_background.npz`, `images_evaluation.npz`): `images`
  [C, 20, 105, 105] bool with True = white background, `labels` [C, 20] the
  character index within the set.
- tfds `omniglot`: 105x105x3 uint8 PNGs, white (255) background; `label` is
  the character index over all 1623 characters (background set first).

Preprocessing: stroke intensity = 1 - white level (so background 0, stroke
1), then exact area averaging 105x105 -> 28x28 by a box-filter matrix R
[28, 105] on both axes: x_28 = R x_105 R^T. Each output pixel is the mean of
the input area it covers (3.75 input pixels per side, fractional at the edges).

Splits: test = the whole evaluation set (659 characters x 20 = 13,180
images). The background set (964 x 20) is split by character, with no RNG:
characters whose index is 9 mod 10 (96 characters, 1,920 images, a tenth of
every alphabet's characters) are val; the other 868 (17,360 images) train.
Within a split, images are ordered by character.
"""

import os
import zipfile
import zlib

import numpy as np

from hecsb_jax.data import dataset
from hecsb_jax.data import tfds_reader
from hecsb_jax.data.errors import DataFormatError

SOURCE_SIZE = 105
NUM_BACKGROUND_CHARS = 964
NUM_EVALUATION_CHARS = 659
VAL_EVERY = 10  # Characters with index % VAL_EVERY == VAL_EVERY - 1 are val.
FILES = {"background": "images_background.npz", "test": "images_evaluation.npz"}
_CHUNK = 256  # Images converted to float at once: bounds peak memory.


def area_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """Box-filter matrix for exact area downsampling along one axis.

  Output pixel i covers input coordinates [i, i + 1) * size_in / size_out;
  entry (i, j) is the fraction of that span that input pixel j covers.
  Working in units of 1/size_out input pixels keeps the overlaps integer.

  Args:
    size_in: input length (105).
    size_out: output length (28), at most size_in.

  Returns:
    [size_out, size_in] float64; rows sum to 1, columns to size_out / size_in.
  """
  out_lo = np.arange(size_out)[:, None] * size_in
  in_lo = np.arange(size_in)[None, :] * size_out
  overlap = np.minimum(out_lo + size_in, in_lo + size_out) - np.maximum(
      out_lo, in_lo
  )
  return np.maximum(overlap, 0) / size_in


def area_resize(images: np.ndarray, size_out: int) -> np.ndarray:
  """Downsamples square images by exact area averaging.

  Args:
    images: [N, S, S] float32.
    size_out: output side length, at most S.

  Returns:
    [N, size_out, size_out] float32; R images R^T for R =
    area_resize_matrix(S, size_out).
  """
  n, size_in = images.shape[0], images.shape[-1]
  r_t = area_resize_matrix(size_in, size_out).T.astype(np.float32)
  # Two plain 2-D GEMMs (columns, then rows) instead of a batched matmul.
  cols = images.reshape(n * size_in, size_in) @ r_t  # [N*S, s]
  cols = cols.reshape(n, size_in, size_out).transpose(0, 2, 1)
  rows = cols.reshape(n * size_out, size_in) @ r_t  # [N*s, s]
  return rows.reshape(n, size_out, size_out).transpose(0, 2, 1)


def to_strokes_28(images: np.ndarray) -> np.ndarray:
  """White-background 105x105 images -> 28x28 stroke intensity, flattened.

  Args:
    images: [N, 105, 105] bool (True = white) or uint8 (255 = white).

  Returns:
    [N, 784] float32 in [0, 1], 1 = stroke.
  """
  # uint8: one table lookup per pixel instead of a convert and a divide.
  lut = (1 - np.arange(256) / 255).astype(np.float32)
  out = np.empty((len(images), 28 * 28), np.float32)
  for start in range(0, len(images), _CHUNK):
    chunk = images[start : start + _CHUNK]
    if chunk.dtype == np.bool_:
      # Not a view-as-uint8 lookup: the shared npz stores True as byte 0xFF.
      strokes = (~chunk).astype(np.float32)
    else:
      strokes = lut[chunk]
    out[start : start + len(chunk)] = area_resize(strokes, 28).reshape(
        len(chunk), -1
    )
  # Float rounding of the weighted sums can step outside [0, 1] by ~1e-7.
  return np.clip(out, 0, 1, out=out)


def _check_images(images, labels, where):
  if images.dtype not in (np.bool_, np.uint8) or images.shape[1:] != (
      SOURCE_SIZE,
      SOURCE_SIZE,
  ):
    raise DataFormatError(
        f"{where}: images are {images.dtype} {images.shape}; expected bool or"
        " uint8 [N, 105, 105]"
    )
  if labels.shape != images.shape[:1] or not np.issubdtype(
      labels.dtype, np.integer
  ):
    raise DataFormatError(
        f"{where}: labels are {labels.dtype} {labels.shape}; expected integer"
        f" [{len(images)}], one per image"
    )
  if labels.size and labels.min() < 0:
    raise DataFormatError(f"{where}: negative label {labels.min()}")


def _ordered_split(x, labels):
  order = np.argsort(labels, kind="stable")
  return dataset.Split(x[order], labels[order].astype(np.int32))


def omniglot_from_arrays(
    background_images: np.ndarray,
    background_labels: np.ndarray,
    evaluation_images: np.ndarray,
    evaluation_labels: np.ndarray,
    source: str = "arrays",
) -> dataset.ImageDataset:
  """Builds the 28x28 Omniglot dataset from white-background 105x105 images.

  Args:
    background_images: [N, 105, 105] bool (True = white) or uint8 (255 =
      white), the background set.
    background_labels: [N] integer character index within the background set.
    evaluation_images: [T, 105, 105], the evaluation set, same convention.
    evaluation_labels: [T] integer character index within the evaluation set.
    source: where the arrays came from, for error messages.

  Returns:
    The dataset; see the module docstring for the splits.

  Raises:
    DataFormatError: wrong dtype or shape, an empty split, or strokes that are
      the majority of pixels (an inverted background convention).
  """
  sets = {}
  for name, images, labels in (
      ("background", background_images, background_labels),
      ("evaluation", evaluation_images, evaluation_labels),
  ):
    labels = np.asarray(labels)
    _check_images(images, labels, f"{source} ({name} set)")
    x = to_strokes_28(images)
    if x.size and x.mean() >= 0.5:
      raise DataFormatError(
          f"{source} ({name} set): mean stroke intensity {x.mean():.3f} after"
          " inverting; expected white background with dark strokes (strokes"
          " are a minority of pixels)"
      )
    sets[name] = (x, labels)
  x, labels = sets["background"]
  is_val = labels % VAL_EVERY == VAL_EVERY - 1
  if is_val.all() or not is_val.any() or not len(sets["evaluation"][0]):
    raise DataFormatError(
        f"{source}: empty train, val or test split ({(~is_val).sum()} /"
        f" {is_val.sum()} / {len(sets['evaluation'][0])} images); the"
        f" background set needs at least {VAL_EVERY} characters"
    )
  return dataset.ImageDataset(
      name="omniglot",
      train=_ordered_split(x[~is_val], labels[~is_val]),
      val=_ordered_split(x[is_val], labels[is_val]),
      test=_ordered_split(*sets["evaluation"]),
      image_shape=dataset.IMAGE_SHAPE,
  )


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks one Omniglot npz file; returns flat images, labels."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Omniglot file missing: expected {path!r}, an npz with keys 'images'"
        " [C, 20, 105, 105] bool and 'labels' [C, 20]"
    )
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise DataFormatError(
          f"{path!r} holds a single {type(npz).__name__}; expected an npz"
          " archive with keys 'images' and 'labels'"
      )
    with npz:
      keys = set(npz.files)
      if not {"images", "labels"} <= keys:
        raise DataFormatError(
            f"{path!r} has keys {sorted(keys)}; expected 'images' and 'labels'"
        )
      # Members are decompressed here, so a corrupt member fails here too.
      images, labels = npz["images"], npz["labels"]
  except DataFormatError:
    raise
  except (EOFError, OSError, ValueError, zipfile.BadZipFile, zlib.error) as e:
    raise DataFormatError(
        f"{path!r} is not a readable npz file ({type(e).__name__}: {e});"
        " expected an npz with keys 'images' and 'labels'"
    ) from e
  shape = images.shape
  if images.dtype != np.bool_ or images.ndim != 4 or shape[2:] != (105, 105):
    raise DataFormatError(
        f"{path!r}: 'images' is {images.dtype} {shape}; expected bool"
        " [C, 20, 105, 105] with True = white background"
    )
  if labels.shape != shape[:2] or not np.issubdtype(labels.dtype, np.integer):
    raise DataFormatError(
        f"{path!r}: 'labels' is {labels.dtype} {labels.shape}; expected"
        f" integer {shape[:2]} (character index within the set)"
    )
  return images.reshape(-1, *shape[2:]), labels.reshape(-1)


def load_omniglot_npz(directory: str | os.PathLike) -> dataset.ImageDataset:
  """Loads Omniglot from images_background.npz and images_evaluation.npz.

  Args:
    directory: folder that holds both npz files (e.g. ../shared/data/omniglot).

  Returns:
    The 28x28 dataset (see the module docstring for the splits).

  Raises:
    FileNotFoundError: an npz file is missing; the message names it.
    DataFormatError: an npz file is corrupt or has wrong keys, dtypes or
      shapes; the message names it.
  """
  directory = os.fspath(directory)
  arrays = {}
  for role, name in FILES.items():
    path = os.path.join(directory, name)
    images, labels = _read_npz(path)
    arrays[role] = (images, labels)
  return omniglot_from_arrays(
      *arrays["background"], *arrays["test"], source=directory
  )


def _tfds_gray(image: np.ndarray) -> np.ndarray:
  """[105, 105, 3] uint8 with equal channels -> [105, 105] uint8."""
  if image.shape != (SOURCE_SIZE, SOURCE_SIZE, 3) or image.dtype != np.uint8:
    raise DataFormatError(
        f"tfds omniglot image is {image.dtype} {image.shape}; expected uint8"
        " [105, 105, 3]"
    )
  gray = image[..., 0]
  if not (np.array_equal(gray, image[..., 1]) and np.array_equal(
      gray, image[..., 2]
  )):
    raise DataFormatError(
        "tfds omniglot image has unequal RGB channels; expected grayscale"
    )
  return gray


def omniglot_from_tfds_arrays(
    train: dict[str, np.ndarray], test: dict[str, np.ndarray], source: str
) -> dataset.ImageDataset:
  """Builds the dataset from tfds `omniglot` numpy examples.

  Args:
    train: {"image": [N, 105, 105] uint8 (255 = white), "label": [N] int in
      [0, 964)}, the tfds "train" split (= background set).
    test: same for the tfds "test" split (= evaluation set), labels in
      [964, 1623).
    source: for error messages.

  Returns:
    The dataset, labels renumbered within each set as in the npz files.

  Raises:
    DataFormatError: labels outside the ranges above, or as in
      `omniglot_from_arrays`.
  """
  offsets = {"train": 0, "test": NUM_BACKGROUND_CHARS}
  counts = {"train": NUM_BACKGROUND_CHARS, "test": NUM_EVALUATION_CHARS}
  labels = {}
  for name, split in (("train", train), ("test", test)):
    lo, hi = offsets[name], offsets[name] + counts[name]
    y = np.asarray(split["label"])
    if y.size and (y.min() < lo or y.max() >= hi):
      raise DataFormatError(
          f"{source}: {name} labels span {y.min()}..{y.max()}; expected"
          f" {lo}..{hi - 1}"
      )
    labels[name] = y - lo
  return omniglot_from_arrays(
      train["image"], labels["train"], test["image"], labels["test"], source
  )


def load_omniglot_tfds(
    data_dir: str | os.PathLike | None = None,
) -> dataset.ImageDataset:
  """Loads Omniglot through tensorflow-datasets (downloads on first use).

  Same preprocessing and character-based splits as `load_omniglot_npz`.

  Args:
    data_dir: tfds data_dir; None uses tfds's default (~/tensorflow_datasets).

  Returns:
    The 28x28 dataset.

  Raises:
    ImportError: tensorflow-datasets (optional extra `data`) is missing.
    DataFormatError: the tfds examples are not as documented.
  """
  arrays = tfds_reader.read_splits(
      "omniglot",
      ("train", "test"),
      ("image", "label"),
      data_dir=data_dir,
      convert={"image": _tfds_gray},
  )
  return omniglot_from_tfds_arrays(
      arrays["train"],
      arrays["test"],
      source=f"tfds omniglot (data_dir={data_dir})",
  )


@dataset.register_loader("omniglot", "local")
def _load_local(data_dir):
  directory = dataset.resolve_local_dir(
      data_dir, "omniglot", tuple(FILES.values())
  )
  return load_omniglot_npz(directory)


dataset.register_loader("omniglot", "tfds")(load_omniglot_tfds)
