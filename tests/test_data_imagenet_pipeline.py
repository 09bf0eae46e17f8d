"""The grain input pipeline: deterministic per (seed, epoch), evaluation
preprocessing, unlabelled images, tfds imagenet2012 on mock data, and
errors that name the file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import imagenet_pipeline as ip
from hecsb_jax.data.errors import DataFormatError


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
  """Eight small JPEGs of different shapes (one grayscale); labels with -1."""
  folder = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  examples = []
  for i in range(8):
    shape = (40 + 9 * i, 70 - 4 * i) + (() if i == 3 else (3,))
    path = folder / f"img{i}.jpg"
    Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(path)
    examples.append((path, -1 if i % 4 == 0 else i))
  return examples


def _epoch(source, epoch, seed=0, **kwargs):
  return list(ip.train_batches(source, batch_size=3, seed=seed, epoch=epoch,
                               **kwargs))


def test_training_batches_are_a_function_of_seed_and_epoch(image_files):
  source = ip.FileSource(image_files)
  first = _epoch(source, 1)
  assert len(first) == ip.steps_per_epoch(source, 3) == 2  # 8 // 3
  for batch in first:
    assert batch["image"].shape == (3, 224, 224, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
  # Same (seed, epoch), other thread count: the same batches.
  again = _epoch(source, 1, num_threads=1)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # Another epoch (or seed): other crops.
  for other in (_epoch(source, 2), _epoch(source, 1, seed=1)):
    assert any(not np.array_equal(a["image"], b["image"])
               for a, b in zip(first, other))
  # Each epoch is a permutation: over many epochs every image is seen and
  # unlabelled ones keep label -1.
  labels = np.concatenate([b["label"] for e in range(1, 6)
                           for b in _epoch(source, e)])
  assert set(labels) == {l for _, l in image_files}


@pytest.mark.parametrize("count,batch_size", [(2, 4), (3, 3), (4, 4)])
def test_process_shards_add_up_to_the_one_process_batches(count, batch_size):
  # 11 images: a remainder that one process drops, and shards of unequal
  # length that must still make the same number of steps.
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (11, 24, 30, 3), np.uint8)
  source = ip.ArraySource(images, np.arange(11))
  kwargs = dict(batch_size=batch_size, seed=3, epoch=2, size=16)
  whole = list(ip.train_batches(source, **kwargs))
  shards = [list(ip.train_batches(source, shard=(i, count), **kwargs))
            for i in range(count)]
  assert len(whole) == ip.steps_per_epoch(source, batch_size)
  for k, batch in enumerate(whole):
    parts = [shard[k] for shard in shards]
    assert all(len(p["label"]) == batch_size // count for p in parts)
    labels = np.concatenate([p["label"] for p in parts])
    order = np.argsort(labels)
    # The same examples with the same crops and flips (labels are unique).
    np.testing.assert_array_equal(np.sort(batch["label"]), labels[order])
    np.testing.assert_array_equal(
        batch["image"][np.argsort(batch["label"])],
        np.concatenate([p["image"] for p in parts])[order])
  assert all(len(shard) == len(whole) for shard in shards)


def test_shard_must_divide_the_batch():
  source = ip.ArraySource(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4))
  with pytest.raises(ValueError, match="batch size 3 does not split over 2"):
    ip.train_batches(source, batch_size=3, seed=0, epoch=1, shard=(0, 2))
  with pytest.raises(ValueError, match="0 <= index < count"):
    ip.train_batches(source, batch_size=2, seed=0, epoch=1, shard=(2, 2))


def test_train_fn_feeds_fit_the_same_batches():
  images = np.random.default_rng(1).integers(0, 256, (5, 30, 40, 3),
                                             np.uint8)
  source = ip.ArraySource(images, np.array([3, -1, 4, 1, -1]))
  fn = ip.train_fn(source, batch_size=2, seed=7, size=16)
  a, b = list(fn(3)), list(fn(3))
  assert len(a) == 2 and a[0]["image"].shape == (2, 16, 16, 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  with pytest.raises(ValueError, match="no batch"):
    ip.train_fn(source, batch_size=6, seed=0)


def test_eval_preprocessing_matches_the_folder_reader(image_files):
  source = ip.FileSource(image_files)
  batches = list(ip.eval_batches(source, batch_size=3))
  assert [b["image"].shape for b in batches] == [(3, 224, 224, 3)] * 2 + [
      (2, 224, 224, 3)]
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels, [l for _, l in image_files])
  # Bicubic resize 256 + centre crop 224, (x - 127) / 128: the reference
  # preprocessing of imagenet_folder.
  expected = imagenet_folder.preprocess_eval(image_files[3][0])
  np.testing.assert_array_equal(batches[1]["image"][0], expected)
  resnet = next(ip.eval_batches(source, batch_size=1, norm=ip.TORCHVISION,
                                interpolation="bilinear"))
  assert resnet["image"].shape == (1, 224, 224, 3)
  assert abs(float(resnet["image"].mean())) < 2.5


def test_read_image_list_allows_unlabelled_images(tmp_path):
  (tmp_path / "images" / "sub").mkdir(parents=True)
  for name in ("a.jpg", "sub/b.jpg"):
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / name)
  csv = tmp_path / "labels.csv"
  csv.write_text("filename,source,class_index,note\n"
                 "a.jpg,x,5,\nsub/b.jpg,y,-1,no label\n")
  examples = ip.read_image_list(csv, tmp_path / "images")
  assert [(Path(p).name, l) for p, l in examples] == [("a.jpg", 5),
                                                      ("b.jpg", -1)]


def test_bad_inputs_raise_errors_naming_the_file(tmp_path):
  missing = tmp_path / "missing.jpg"
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    ip.FileSource([(missing, 0)])
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"\xff\xd8 this is not a JPEG")
  with pytest.raises(DataFormatError, match="broken.jpg"):
    list(ip.eval_batches(ip.FileSource([(broken, 0)]), batch_size=1))
  with pytest.raises(DataFormatError, match="broken.jpg"):
    list(ip.train_batches(ip.FileSource([(broken, 0)]), batch_size=1,
                          seed=0, epoch=1))
  csv = tmp_path / "labels.csv"
  csv.write_text("name,label\nx.jpg,1\n")
  with pytest.raises(DataFormatError, match="labels.csv.*filename"):
    ip.read_image_list(csv, tmp_path)
  csv.write_text("filename,class_index\nbroken.jpg,1000\n")
  with pytest.raises(DataFormatError, match="labels.csv:2"):
    ip.read_image_list(csv, tmp_path)
  csv.write_text("filename,class_index\nmissing.jpg,1\n")
  with pytest.raises(FileNotFoundError, match="missing.jpg.*labels.csv:2"):
    ip.read_image_list(csv, tmp_path)


def test_tfds_imagenet2012_on_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    train = ip.imagenet2012_source("train")
    batches = list(ip.train_batches(train, batch_size=2, seed=0, epoch=1))
    val = ip.imagenet2012_source("validation")
    evaluated = list(ip.eval_batches(val, batch_size=4))
  assert len(batches) == 2
  assert batches[0]["image"].shape == (2, 224, 224, 3)
  assert [b["image"].shape[0] for b in evaluated] == [4, 1]
  labels = np.concatenate([b["label"] for b in evaluated])
  assert labels.dtype == np.int32 and np.all((0 <= labels) & (labels < 1000))


def test_prepare_imagenet2012_names_the_missing_tars(tmp_path):
  (tmp_path / "ILSVRC2012_img_val.tar").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="missing ILSVRC2012_img_train"):
    ip.prepare_imagenet2012(tmp_path / "tfds", tmp_path)


def test_real_extra_images_decode(shared_data):
  folder = shared_data("extra_images")
  examples = ip.read_image_list(folder / "labels.csv", folder / "images")
  assert len(examples) == 3327
  assert sum(l == -1 for _, l in examples) > 0
  source = ip.FileSource([e for e in examples if e.label == -1][:2]
                         + [e for e in examples if e.label >= 0][:2])
  batch = next(ip.train_batches(source, batch_size=4, seed=0, epoch=1))
  assert batch["image"].shape == (4, 224, 224, 3)
  assert sorted(batch["label"] == -1) == [False, False, True, True]
