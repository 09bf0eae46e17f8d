"""The imagenet_samples-layout folder reader, preprocessing and cache."""

import csv

import numpy as np
from PIL import Image
import pytest

from hecsb_jax.data import imagenet_folder
from hecsb_jax.data.errors import DataFormatError

# filename, class_index, split, (width, height), mode
IMAGES = [
    ("n0_a.JPEG", 0, "dev", (300, 200), "RGB"),
    ("n1_b.JPEG", 1, "dev", (100, 150), "L"),  # grayscale, smaller than 224
    ("n4_c.JPEG", 4, "holdout", (260, 260), "RGB"),
    ("n9_d.JPEG", 9, "holdout", (640, 480), "RGB"),
]


def _write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


@pytest.fixture
def folder(tmp_path):
  """A small folder in the imagenet_samples layout."""
  (tmp_path / "images").mkdir()
  rng = np.random.default_rng(0)
  for name, _, _, (w, h), mode in IMAGES:
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / "images" / name)
  _write_csv(
      tmp_path / "labels.csv",
      imagenet_folder.LABEL_COLUMNS,
      [(n, f"n{c:08d}", c, f"class {c}") for n, c, *_ in IMAGES],
  )
  _write_csv(
      tmp_path / "split.csv",
      imagenet_folder.SPLIT_COLUMNS,
      [(n, c, s) for n, c, s, *_ in IMAGES],
  )
  return tmp_path


def test_read_split_returns_paths_and_labels(folder):
  dev = imagenet_folder.read_split(folder, "dev")
  assert [(e.path.name, e.label) for e in dev] == [
      ("n0_a.JPEG", 0),
      ("n1_b.JPEG", 1),
  ]
  assert dev[0].path == folder / "images" / "n0_a.JPEG"
  holdout = imagenet_folder.read_split(folder, "holdout")
  assert [e.label for e in holdout] == [4, 9]
  assert len(imagenet_folder.read_split(folder, "all")) == 4


def test_preprocess_eval_gives_normalized_224_rgb(folder):
  for name, *_ in IMAGES:
    x = imagenet_folder.preprocess_eval(folder / "images" / name)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    assert x.min() >= -127 / 128 and x.max() <= 128 / 128
  gray = imagenet_folder.decode_center_crop(folder / "images" / "n1_b.JPEG")
  assert gray.dtype == np.uint8
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_normalize_maps_127_to_zero():
  x = np.array([0, 127, 255], np.uint8)
  np.testing.assert_array_equal(
      imagenet_folder.normalize(x), np.array([-127, 0, 128]) / 128
  )


def test_center_crop_drops_the_border(tmp_path):
  # 256x256 needs no resize; a 16-pixel red frame lies outside the crop.
  pixels = np.zeros((256, 256, 3), np.uint8)
  pixels[...] = (255, 0, 0)
  pixels[16:240, 16:240] = (0, 0, 255)
  Image.fromarray(pixels).save(tmp_path / "frame.png")
  crop = imagenet_folder.decode_center_crop(tmp_path / "frame.png")
  assert np.all(crop == (0, 0, 255))


def test_resize_keeps_aspect_with_shorter_side_256(tmp_path):
  # 128x512 (w x h): resized to 256x1024, cropped to rows 400..623.
  pixels = np.zeros((512, 128, 3), np.uint8)
  pixels[:256] = 255  # white top half, black bottom half
  Image.fromarray(pixels).save(tmp_path / "tall.png")
  crop = imagenet_folder.decode_center_crop(tmp_path / "tall.png")
  # The edge falls at row 512 of 1024, i.e. row 112 of the crop.
  assert np.all(crop[:100] == 255) and np.all(crop[124:] == 0)


def test_missing_image_names_file_and_csv_line(folder):
  (folder / "images" / "n4_c.JPEG").unlink()
  with pytest.raises(FileNotFoundError, match=r"n4_c\.JPEG.*labels\.csv:4"):
    imagenet_folder.read_split(folder, "holdout")


def test_unreadable_image_is_named(folder):
  path = folder / "images" / "n0_a.JPEG"
  path.write_bytes(b"\xff\xd8 this is not a JPEG")
  with pytest.raises(DataFormatError, match=r"n0_a\.JPEG: expected an image"):
    imagenet_folder.preprocess_eval(path)


def test_truncated_image_is_named(folder):
  path = folder / "images" / "n9_d.JPEG"
  path.write_bytes(path.read_bytes()[:500])
  with pytest.raises(DataFormatError, match=r"n9_d\.JPEG"):
    imagenet_folder.decode_center_crop(path)


@pytest.mark.parametrize("csv_name", ["labels.csv", "split.csv"])
def test_wrong_csv_columns_are_named(folder, csv_name):
  _write_csv(folder / csv_name, ("file", "label"), [("n0_a.JPEG", 0)])
  with pytest.raises(
      DataFormatError, match=rf"{csv_name}: expected columns filename"
  ) as info:
    imagenet_folder.read_split(folder, "dev")
  assert "missing filename" in str(info.value)


def test_missing_folder_and_csv_are_named(folder, tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere: folder not found"):
    imagenet_folder.read_split(tmp_path / "nowhere", "dev")
  (folder / "split.csv").unlink()
  with pytest.raises(FileNotFoundError, match=r"split\.csv: file not found"):
    imagenet_folder.read_split(folder, "dev")


@pytest.mark.parametrize(
    "row, message",
    [
        (("n0_a.JPEG", 0, "train"), "expected split dev or holdout"),
        (("n0_a.JPEG", 3, "dev"), "class_index 3 but"),
        (("n0_a.JPEG", "x", "dev"), "expected class_index in 0..999"),
    ],
)
def test_inconsistent_split_csv_is_refused(folder, row, message):
  rows = [row] + [(n, c, s) for n, c, s, *_ in IMAGES[1:]]
  _write_csv(folder / "split.csv", imagenet_folder.SPLIT_COLUMNS, rows)
  with pytest.raises(DataFormatError, match=rf"split\.csv:2: {message}"):
    imagenet_folder.read_split(folder, "dev")


def test_cache_decodes_once_per_file_list(folder, tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  images, labels, examples = imagenet_folder.load_split_cached(
      folder, "holdout", cache
  )
  assert images.shape == (2, 224, 224, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, [4, 9])
  np.testing.assert_array_equal(
      images[0], imagenet_folder.decode_center_crop(examples[0].path)
  )

  def no_decoding(*args, **kwargs):
    raise AssertionError("decoded again despite the cache")

  monkeypatch.setattr(imagenet_folder, "decode_all", no_decoding)
  again, _, _ = imagenet_folder.load_split_cached(folder, "holdout", cache)
  np.testing.assert_array_equal(again, images)
  # Another file list is another key: it decodes.
  with pytest.raises(AssertionError, match="decoded again"):
    imagenet_folder.load_split_cached(folder, "dev", cache)


def test_shared_samples_split_800_dev_200_holdout(shared_data):
  folder = shared_data("imagenet_samples")
  dev = imagenet_folder.read_split(folder, "dev")
  holdout = imagenet_folder.read_split(folder, "holdout")
  assert len(dev) == 800 and len(holdout) == 200
  labels = sorted(e.label for e in dev + holdout)
  assert labels == list(range(1000))
  assert all(e.label % 5 == 4 for e in holdout)
