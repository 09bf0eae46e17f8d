"""Omniglot loader: facts of the real npz files, the resize, bad files, tfds."""

import os
import sys

import numpy as np
import pytest

from hecsb_jax import data
from hecsb_jax.data import omniglot


@pytest.fixture(scope="module")
def real(omniglot_dir):
  # Through load_dataset on the folder that holds omniglot/, as the
  # experiments call it.
  return data.load_dataset("omniglot", omniglot_dir.parent)


def _block_mean_reference(images: np.ndarray) -> np.ndarray:
  """105 -> 28 area average another way: upsample x4 to 420, mean 15x15."""
  up = np.repeat(np.repeat(images.astype(np.float64), 4, axis=1), 4, axis=2)
  return up.reshape(len(images), 28, 15, 28, 15).mean(axis=(2, 4))


def _synthetic(num_chars=10, drawers=2, seed=0):
  """White-background bool images [C, D, 105, 105], ~10% stroke pixels."""
  rng = np.random.default_rng(seed)
  images = rng.random((num_chars, drawers, 105, 105)) > 0.1
  labels = np.repeat(np.arange(num_chars)[:, None], drawers, axis=1)
  return images, labels


def _write_npz_folder(folder, num_test_chars=3):
  os.makedirs(folder, exist_ok=True)
  bg = _synthetic(10, seed=1)
  ev = _synthetic(num_test_chars, seed=2)
  np.savez_compressed(
      os.path.join(folder, "images_background.npz"), images=bg[0], labels=bg[1]
  )
  np.savez_compressed(
      os.path.join(folder, "images_evaluation.npz"), images=ev[0], labels=ev[1]
  )
  return bg, ev


# ----------------------------------------------------------------------------
# Facts of the real files.


def test_counts_are_background_964x20_and_evaluation_659x20(real):
  assert real.name == "omniglot" and real.image_shape == (28, 28)
  assert len(real.train.images) + len(real.val.images) == 964 * 20
  assert len(real.test.images) == len(real.test.labels) == 659 * 20
  # Character split: 96 of the 964 background characters are val.
  assert len(real.val.images) == len(real.val.labels) == 96 * 20
  assert len(real.train.labels) == 868 * 20


def test_val_holds_whole_characters_disjoint_from_train(real):
  train_chars, val_chars = set(real.train.labels), set(real.val.labels)
  assert not train_chars & val_chars
  assert train_chars | val_chars == set(range(964))
  assert all(c % 10 == 9 for c in val_chars)
  assert set(real.test.labels) == set(range(659))
  assert np.all(np.diff(real.train.labels) >= 0)  # Ordered by character.


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_images_are_flat_float32_in_unit_range_with_sparse_strokes(
    real, split
):
  s = getattr(real, split)
  assert s.images.shape == (len(s.labels), 784)
  assert s.images.dtype == np.float32 and s.labels.dtype == np.int32
  assert s.images.min() == 0.0 and s.images.max() == 1.0
  assert s.images.mean() < 0.5  # Strokes (= 1) are the minority.


def test_real_images_match_block_mean_of_inverted_npz(real, omniglot_dir):
  with np.load(omniglot_dir / "images_background.npz") as npz:
    first_char = npz["images"][0]  # [20, 105, 105], True = background.
    char_9 = npz["images"][9]  # The first val character.
  np.testing.assert_allclose(
      real.train.images[:20].reshape(20, 28, 28),
      _block_mean_reference(~first_char),
      atol=1e-6,
  )
  np.testing.assert_allclose(
      real.val.images[:20].reshape(20, 28, 28),
      _block_mean_reference(~char_9),
      atol=1e-6,
  )


# ----------------------------------------------------------------------------
# The 105 -> 28 area resize.


def test_resize_matrix_rows_sum_to_one_and_columns_to_scale():
  r = omniglot.area_resize_matrix(105, 28)
  assert r.shape == (28, 105)
  np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_allclose(r.sum(axis=0), 28 / 105, atol=1e-12)
  assert np.all(r >= 0)


def test_resize_keeps_constant_images_constant():
  x = np.full((2, 105, 105), 0.3, np.float32)
  np.testing.assert_allclose(omniglot.area_resize(x, 28), 0.3, atol=1e-6)


def test_resize_preserves_mass_up_to_area_scale():
  x = np.random.default_rng(0).random((3, 105, 105)).astype(np.float32)
  y = omniglot.area_resize(x, 28)
  np.testing.assert_allclose(
      y.sum(axis=(1, 2)), x.sum(axis=(1, 2)) * (28 / 105) ** 2, rtol=1e-5
  )


def test_resize_equals_upsample_then_block_mean():
  x = np.random.default_rng(1).random((3, 105, 105)).astype(np.float32)
  np.testing.assert_allclose(
      omniglot.area_resize(x, 28), _block_mean_reference(x), atol=1e-6
  )


# ----------------------------------------------------------------------------
# Synthetic npz folders.


def test_load_dataset_reads_a_folder_of_npz_files(tmp_path):
  (bg_images, _), (ev_images, _) = _write_npz_folder(tmp_path / "omniglot")
  ds = data.load_dataset("omniglot", tmp_path)
  assert len(ds.train.images) == 9 * 2 and len(ds.val.images) == 2
  assert len(ds.test.images) == 3 * 2
  assert ds.val.labels.tolist() == [9, 9]
  np.testing.assert_allclose(
      ds.val.images.reshape(-1, 28, 28),
      _block_mean_reference(~bg_images[9]),
      atol=1e-6,
  )
  np.testing.assert_allclose(
      ds.test.images.reshape(-1, 28, 28),
      _block_mean_reference(~ev_images.reshape(-1, 105, 105)),
      atol=1e-6,
  )


def test_inverted_background_is_rejected(tmp_path):
  _write_npz_folder(tmp_path)
  path = tmp_path / "images_evaluation.npz"
  images, labels = _synthetic(3)
  np.savez(path, images=~images, labels=labels)  # True = stroke: wrong.
  with pytest.raises(data.DataFormatError, match="white background"):
    omniglot.load_omniglot_npz(tmp_path)


# ----------------------------------------------------------------------------
# Bad input: every message names the path.


def test_missing_npz_raises_file_not_found_naming_it(tmp_path):
  _write_npz_folder(tmp_path)
  missing = tmp_path / "images_evaluation.npz"
  missing.unlink()
  with pytest.raises(FileNotFoundError) as e:
    omniglot.load_omniglot_npz(tmp_path)
  assert str(missing) in str(e.value) and "'images'" in str(e.value)


def test_missing_omniglot_folder_names_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.load_dataset("omniglot", tmp_path)
  assert str(tmp_path / "omniglot") in str(e.value)


def test_wrong_npz_keys_raise_data_format_error(tmp_path):
  _write_npz_folder(tmp_path)
  bad = tmp_path / "images_background.npz"
  images, labels = _synthetic()
  np.savez(bad, x=images, y=labels)
  with pytest.raises(data.DataFormatError, match="'images' and 'labels'") as e:
    omniglot.load_omniglot_npz(tmp_path)
  assert str(bad) in str(e.value)


def test_truncated_npz_raises_data_format_error(tmp_path, omniglot_dir):
  _write_npz_folder(tmp_path)
  bad = tmp_path / "images_evaluation.npz"
  content = (omniglot_dir / bad.name).read_bytes()
  bad.write_bytes(content[: len(content) // 2])
  with pytest.raises(data.DataFormatError) as e:
    omniglot.load_omniglot_npz(tmp_path)
  assert str(bad) in str(e.value)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((10, 2, 105, 105), np.uint8), None, "bool"),
        (np.ones((10, 2, 28, 28), bool), None, "105"),
        (None, np.zeros((10, 3), np.int64), "'labels'"),
        (None, np.zeros((10, 2), np.float32), "'labels'"),
    ],
)
def test_wrong_dtype_or_shape_raises_data_format_error(
    tmp_path, images, labels, match
):
  _write_npz_folder(tmp_path)
  good_images, good_labels = _synthetic()
  bad = tmp_path / "images_background.npz"
  np.savez(
      bad,
      images=good_images if images is None else images,
      labels=good_labels if labels is None else labels,
  )
  with pytest.raises(data.DataFormatError, match=match) as e:
    omniglot.load_omniglot_npz(tmp_path)
  assert str(bad) in str(e.value)


def test_npy_or_garbage_instead_of_npz_raises_data_format_error(tmp_path):
  _write_npz_folder(tmp_path)
  bad = tmp_path / "images_background.npz"
  for write in (
      lambda: np.save(open(bad, "wb"), np.zeros(3)),
      lambda: bad.write_bytes(b"\x00garbage" * 100),
  ):
    write()
    with pytest.raises(data.DataFormatError) as e:
      omniglot.load_omniglot_npz(tmp_path)
    assert str(bad) in str(e.value)


# ----------------------------------------------------------------------------
# tensorflow-datasets path (never downloads: mocked with our own examples).


def _as_tfds_examples(images, labels, label_offset):
  """npz-convention bool images -> tfds omniglot examples (RGB, 255 = white)."""
  rgb = np.repeat(images.reshape(-1, 105, 105, 1).astype(np.uint8) * 255, 3, -1)
  return [
      {"image": im, "label": np.int64(y + label_offset)}
      for im, y in zip(rgb, labels.reshape(-1))
  ]


def test_tfds_path_matches_npz_path_on_the_same_images(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  bg, ev = _write_npz_folder(tmp_path)
  examples = {
      "train": _as_tfds_examples(*bg, label_offset=0)[::-1],  # Any order.
      "test": _as_tfds_examples(*ev, label_offset=964),
  }

  def as_data_source(self, split=None, **kwargs):
    del self, kwargs
    return [examples[s] for s in split]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    from_tfds = data.load_dataset("omniglot", source="tfds")
  from_npz = omniglot.load_omniglot_npz(tmp_path)
  for a, b in zip(from_tfds[1:4], from_npz[1:4]):
    np.testing.assert_array_equal(a.labels, b.labels)
    # Within a character the tfds order is its own; compare as sets of rows.
    for c in np.unique(a.labels):
      np.testing.assert_allclose(
          np.sort(a.images[a.labels == c], axis=0),
          np.sort(b.images[b.labels == c], axis=0),
          atol=1e-6,
      )


def test_tfds_labels_outside_their_set_are_rejected():
  tfds = pytest.importorskip("tensorflow_datasets")
  images, labels = _synthetic()
  examples = {
      "train": _as_tfds_examples(images, labels, 0),
      "test": _as_tfds_examples(images, labels, 0),  # Should be >= 964.
  }

  def as_data_source(self, split=None, **kwargs):
    del self, kwargs
    return [examples[s] for s in split]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    with pytest.raises(data.DataFormatError, match="964"):
      omniglot.load_omniglot_tfds()


def test_tfds_random_mock_images_are_rejected_not_passed_on():
  tfds = pytest.importorskip("tensorflow_datasets")
  # tfds's default mock images have unequal random RGB channels and labels
  # over all 1623 classes: the loader must refuse them as Omniglot.
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(data.DataFormatError):
      omniglot.load_omniglot_tfds()


def test_tfds_missing_asks_to_install_the_data_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match=r"hecsb_jax\[data\]"):
    data.load_dataset("omniglot", source="tfds")
