"""MNIST loader: facts of the real files, synthetic IDX folders, bad files."""

import gzip
import os
import shutil
import sys

import numpy as np
import pytest

from hecsb_jax import data
from hecsb_jax.data import mnist

# From ../shared/data/README.md (the official files).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real(mnist_dir):
  # Through load_dataset on the folder that holds mnist/, as the experiments
  # call it.
  return data.load_dataset("mnist", mnist_dir.parent)


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
  header = np.array([magic, *array.shape], dtype=">u4").tobytes()
  return header + array.astype(np.uint8).tobytes()


def _write_idx_folder(folder, n_train=12, n_test=3, gz=True, seed=0):
  """Writes the four IDX files with random content; returns the arrays."""
  rng = np.random.default_rng(seed)
  arrays = {
      "train_images": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
      "train_labels": rng.integers(0, 10, n_train, np.uint8),
      "test_images": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
      "test_labels": rng.integers(0, 10, n_test, np.uint8),
  }
  os.makedirs(folder, exist_ok=True)
  for role, stem in mnist.FILES.items():
    magic = mnist.IMAGES_MAGIC if "images" in role else mnist.LABELS_MAGIC
    raw = _idx_bytes(arrays[role], magic)
    if gz:
      with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as f:
        f.write(raw)
    else:
      with open(os.path.join(folder, stem), "wb") as f:
        f.write(raw)
  return arrays


# ----------------------------------------------------------------------------
# Facts of the real files.


def test_split_sizes_are_50k_10k_10k(real):
  assert real.name == "mnist"
  assert len(real.train.images) == len(real.train.labels) == 50_000
  assert len(real.val.images) == len(real.val.labels) == 10_000
  assert len(real.test.images) == len(real.test.labels) == 10_000
  assert real.image_shape == (28, 28)


def test_first_labels_match_readme(real):
  assert real.train.labels[0] == 5
  assert real.test.labels[0] == 7


def test_label_counts_match_readme(real):
  official_train = np.concatenate([real.train.labels, real.val.labels])
  assert np.bincount(official_train, minlength=10).tolist() == TRAIN_COUNTS
  assert np.bincount(real.test.labels, minlength=10).tolist() == TEST_COUNTS


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_images_are_flat_float32_bytes_over_255(real, split):
  s = getattr(real, split)
  assert s.images.shape == (len(s.labels), 784)
  assert s.images.dtype == np.float32 and s.labels.dtype == np.int32
  assert s.images.min() == 0.0 and s.images.max() == 1.0
  # Every pixel is k / 255 for an integer k: nothing was resampled.
  k = s.images[:1000] * 255
  np.testing.assert_allclose(k, np.round(k), atol=1e-4)


# ----------------------------------------------------------------------------
# Any folder of the four IDX files.


@pytest.mark.parametrize("gz", [True, False])
def test_load_dataset_reads_any_folder_of_idx_files(tmp_path, gz):
  arrays = _write_idx_folder(tmp_path / "mnist", gz=gz)
  shutil.copytree(tmp_path / "mnist", tmp_path / "any_name")
  # The folder that holds mnist/, or directly a folder of the four files.
  for data_dir in (tmp_path, tmp_path / "any_name"):
    ds = data.load_dataset("mnist", data_dir)
    x = arrays["train_images"].reshape(12, 784) / np.float32(255)
    np.testing.assert_array_equal(ds.train.images, x[:10])  # Last sixth: val.
    np.testing.assert_array_equal(ds.val.images, x[10:])
    np.testing.assert_array_equal(ds.train.labels, arrays["train_labels"][:10])
    np.testing.assert_array_equal(ds.val.labels, arrays["train_labels"][10:])
    np.testing.assert_array_equal(
        ds.test.images, arrays["test_images"].reshape(3, 784) / np.float32(255)
    )
    np.testing.assert_array_equal(ds.test.labels, arrays["test_labels"])
    assert ds.train.images.dtype == np.float32
    assert ds.test.labels.dtype == np.int32


# ----------------------------------------------------------------------------
# Bad input: every message names the path.


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
  _write_idx_folder(tmp_path)
  missing = tmp_path / "t10k-labels-idx1-ubyte.gz"
  missing.unlink()
  with pytest.raises(FileNotFoundError) as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(missing) in str(e.value) and "IDX" in str(e.value)


def test_missing_mnist_folder_names_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.load_dataset("mnist", tmp_path)
  assert str(tmp_path / "mnist") in str(e.value)
  assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_truncated_gz_raises_data_format_error(tmp_path, mnist_dir):
  for name in os.listdir(mnist_dir):
    os.symlink(mnist_dir / name, tmp_path / name)
  bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
  content = (mnist_dir / bad.name).read_bytes()
  bad.unlink()
  bad.write_bytes(content[: len(content) // 2])
  with pytest.raises(data.DataFormatError) as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_non_gzip_bytes_in_gz_file_raise_data_format_error(tmp_path):
  _write_idx_folder(tmp_path)
  bad = tmp_path / "train-labels-idx1-ubyte.gz"
  bad.write_bytes(b"this is not gzip data at all")
  with pytest.raises(data.DataFormatError, match="gzip") as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_wrong_magic_raises_data_format_error(tmp_path):
  _write_idx_folder(tmp_path, gz=False)
  bad = tmp_path / "train-images-idx3-ubyte"
  labels = np.zeros(12, np.uint8)
  bad.write_bytes(_idx_bytes(labels, mnist.LABELS_MAGIC))  # A label file.
  with pytest.raises(data.DataFormatError, match="0x00000803") as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_payload_shorter_than_header_declares_raises(tmp_path):
  _write_idx_folder(tmp_path, gz=False)
  bad = tmp_path / "t10k-images-idx3-ubyte"
  bad.write_bytes(bad.read_bytes()[:-1])
  with pytest.raises(data.DataFormatError, match="truncated") as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_header_cut_short_raises(tmp_path):
  _write_idx_folder(tmp_path, gz=False)
  bad = tmp_path / "t10k-labels-idx1-ubyte"
  bad.write_bytes(bad.read_bytes()[:6])
  with pytest.raises(data.DataFormatError, match="header") as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_wrong_image_size_raises(tmp_path):
  _write_idx_folder(tmp_path, gz=False)
  bad = tmp_path / "train-images-idx3-ubyte"
  bad.write_bytes(_idx_bytes(np.zeros((12, 32, 32)), mnist.IMAGES_MAGIC))
  with pytest.raises(data.DataFormatError, match="28") as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_label_count_mismatch_raises(tmp_path):
  _write_idx_folder(tmp_path, gz=False)
  bad = tmp_path / "train-labels-idx1-ubyte"
  bad.write_bytes(_idx_bytes(np.zeros(11), mnist.LABELS_MAGIC))
  with pytest.raises(data.DataFormatError, match="11 labels") as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_label_out_of_range_raises(tmp_path):
  _write_idx_folder(tmp_path, gz=False)
  bad = tmp_path / "t10k-labels-idx1-ubyte"
  bad.write_bytes(_idx_bytes(np.array([1, 2, 10]), mnist.LABELS_MAGIC))
  with pytest.raises(data.DataFormatError) as e:
    mnist.load_mnist_idx(tmp_path)
  assert str(bad) in str(e.value)


def test_load_dataset_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="data_dir"):
    data.load_dataset("mnist")
  with pytest.raises(ValueError, match="unknown dataset"):
    data.load_dataset("cifar10", tmp_path)
  with pytest.raises(ValueError, match="unknown source"):
    data.load_dataset("mnist", tmp_path, source="http")


# ----------------------------------------------------------------------------
# tensorflow-datasets path (never downloads: mocked).


def test_tfds_path_on_mock_data_gives_same_splits_and_scaling():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset("mnist", source="tfds")
    raw = tfds.data_source("mnist", split="train")
    expected = np.stack([raw[i]["image"][..., 0] for i in range(12)])
  x = expected.reshape(12, 784) / np.float32(255)
  np.testing.assert_array_equal(ds.train.images, x[:10])
  np.testing.assert_array_equal(ds.val.images, x[10:])
  assert ds.test.images.shape == (12, 784)
  assert ds.train.images.dtype == np.float32
  assert ds.train.labels.dtype == np.int32
  assert 0 <= ds.test.images.min() and ds.test.images.max() <= 1


def test_tfds_missing_asks_to_install_the_data_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match=r"hecsb_jax\[data\]"):
    data.load_dataset("mnist", source="tfds")


def test_tfds_missing_tensorflow_names_the_module(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")

  def fail(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

  monkeypatch.setattr(tfds, "data_source", fail)
  with pytest.raises(ImportError, match="pip install tensorflow"):
    mnist.load_mnist_tfds(data_dir="/nonexistent/tfds")
