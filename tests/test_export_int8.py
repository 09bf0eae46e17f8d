"""The int8 export (hecsb_jax/export/int8.py): a model of its own.

On the server tests' tiny random HECS-B (symbols [8, 8, 4]), exported as
a trained model is and then quantized on a small fake imagenet_samples
folder (random images; the dev split calibrates, holdout is never read):
the int8 folder has its own head, tables, model name and id; its head
keeps the float32-in / int32-out contract; its symbols code and decode
exactly with its tables, and a server built on the float model with those
tables answers them as the offline tail does. Histogram tables
(`symbol_tables`) are checked on synthetic symbols.
"""

import asyncio
import csv
import sys

import numpy as np
from PIL import Image
import pytest

pytest.importorskip("ai_edge_quantizer", reason="the export extra's"
                    " ai-edge-quantizer is not installed")

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # tests/ helpers

import edge_fixtures  # pylint: disable=wrong-import-position
import serve_fixtures as fx  # pylint: disable=wrong-import-position

from hecsb_jax import coding  # pylint: disable=wrong-import-position
from hecsb_jax.edge import head as edge_head  # pylint: disable=wrong-import-position
from hecsb_jax.edge import manifest as manifest_lib  # pylint: disable=wrong-import-position
from hecsb_jax.export import int8  # pylint: disable=wrong-import-position
from hecsb_jax.export import symbol_tables  # pylint: disable=wrong-import-position

NUM_DEV = 6


def _fake_samples(root, num_dev=NUM_DEV, num_holdout=3):
  """An imagenet_samples folder of random images (dev, then holdout)."""
  folder = root / "imagenet_samples"
  (folder / "images").mkdir(parents=True)
  rng = np.random.default_rng(0)
  rows = []
  for i in range(num_dev + num_holdout):
    name = f"img{i}.png"
    size = (int(rng.integers(40, 60)), int(rng.integers(40, 60)))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
        folder / "images" / name)
    rows.append((name, i % 10, "dev" if i < num_dev else "holdout"))
  with open(folder / "labels.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["filename", "wnid", "class_index", "class_name"])
    w.writerows((n, f"n{c:08d}", c, f"class{c}") for n, c, _ in rows)
  with open(folder / "split.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["filename", "class_index", "split"])
    w.writerows(rows)
  return root


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
  """(model, float Manifest, int8 Manifest, data dir) of the toy model."""
  root = tmp_path_factory.mktemp("int8")
  data_dir = _fake_samples(root / "data")
  model, float_manifest = edge_fixtures.export_toy_model(root / "export")
  examples = int8.calibration_examples(data_dir, NUM_DEV)
  int8.export_int8(root / "export", examples, log=None)
  return (model, float_manifest,
          manifest_lib.load_manifest(root / "export" / int8.SUBDIR), data_dir)


@pytest.mark.slow
def test_int8_export_is_a_model_of_its_own(int8_export):
  _, float_m, m, _ = int8_export
  assert m.model == float_m.model + "_int8"
  assert m.model_id != float_m.model_id
  tables = coding.load_tables(m.path("tables"))
  assert coding.model_id(tables).hex() == m.model_id
  for kind in manifest_lib.FILE_KINDS:
    assert m.path(kind).is_file(), kind
  assert m.path("tflite").name == "head_int8.tflite"
  assert m.path("tflite").read_bytes() != float_m.path("tflite").read_bytes()
  info = m.training["int8"]
  assert info["calibration"] == {"split": "dev", "images": NUM_DEV}
  assert info["quantized_from"]["model_id"] == float_m.model_id
  assert m.input == float_m.input and m.symbols == float_m.symbols
  # The edge's own runner accepts it: float32 in, int32 out, same shapes.
  edge_head.Head.from_manifest(m)


def _holdout_pixels(data_dir, spec):
  from hecsb_jax.data import imagenet_folder  # pylint: disable=import-outside-toplevel
  examples = imagenet_folder.read_split(data_dir / "imagenet_samples",
                                        "holdout")
  return int8.calibration_pixels(examples, spec)


def _offline_classes(model, symbols):
  """The float tail's classes for ``symbols``, no server."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  logits = nnx.jit(lambda m, s: m.logits_from_symbols(s))(model.module,
                                                          symbols)
  return np.asarray(logits).argmax(axis=-1)


@pytest.mark.slow
def test_int8_symbols_round_trip_and_the_server_answers(int8_export):
  from hecsb_jax.serve import app as app_lib  # pylint: disable=import-outside-toplevel
  import httpx  # pylint: disable=import-outside-toplevel
  model, float_m, m, data_dir = int8_export
  tables = coding.load_tables(m.path("tables"))
  head = edge_head.Head.from_manifest(m)
  pixels = _holdout_pixels(data_dir, m.input)
  symbols = np.concatenate([head(x) for x in pixels])
  assert symbols.dtype == np.int32
  payloads = []
  for i in range(len(symbols)):
    data = coding.compress(symbols[i:i + 1], tables)
    assert coding.read_header(data).model_id.hex() == m.model_id
    np.testing.assert_array_equal(coding.decompress(data, tables),
                                  symbols[i:i + 1])
    payloads.append(data)
  offline = _offline_classes(model, symbols)
  float_payload = coding.compress(
      edge_head.Head.from_manifest(float_m)(pixels[0]), model.tables)

  app = app_lib.create_app(model, fx.TOKEN, tables=tables,
                           batching_enabled=False)

  async def main():
    async with app.router.lifespan_context(app):
      transport = httpx.ASGITransport(app=app)
      async with httpx.AsyncClient(transport=transport,
                                   base_url="http://test") as client:
        health = (await client.get("/healthz")).json()
        answers = [await client.post("/v1/predict", content=p,
                                     headers=fx.AUTH) for p in payloads]
        other = await client.post("/v1/predict", content=float_payload,
                                  headers=fx.AUTH)
        return health, answers, other

  health, answers, other = asyncio.run(main())
  assert health["model_id"] == m.model_id
  for answer, want in zip(answers, offline):
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_id"] == m.model_id
    assert answer.json()["class"] == int(want)
  # The float export's payload names the float tables: another model.
  assert other.status_code == 409


def test_tables_for_another_channel_count_are_refused():
  from hecsb_jax.serve import app as app_lib  # pylint: disable=import-outside-toplevel
  model = fx.tiny_model()
  wrong = symbol_tables.tables_from_symbols(np.zeros((2, 3, 3, fx.M + 1),
                                                     np.int32))
  with pytest.raises(ValueError, match="tables for 5 channels"):
    app_lib.create_app(model, fx.TOKEN, tables=wrong, warm_up=False)


def test_calibration_needs_dev_images_in_range(tmp_path):
  data_dir = _fake_samples(tmp_path, num_dev=2, num_holdout=1)
  assert len(int8.calibration_examples(data_dir, 2)) == 2
  for count in (0, 3):
    with pytest.raises(int8.CalibrationError, match=r"in 1\.\.2"):
      int8.calibration_examples(data_dir, count)
  with pytest.raises(FileNotFoundError, match="imagenet_samples"):
    int8.calibration_examples(tmp_path / "nowhere", 2)


def test_histogram_tables_code_seen_and_unseen_values():
  rng = np.random.default_rng(0)
  symbols = np.round(rng.laplace(0, [0.5, 2.0, 4.0], (500, 3))).astype(
      np.int32) + np.array([0, 3, -7], np.int32)
  tables = symbol_tables.tables_from_symbols(symbols)
  # Per channel, its own offset: min - 1 (the margin).
  np.testing.assert_array_equal(tables.offset, symbols.min(axis=0) - 1)
  data = coding.compress(symbols[None, None], tables)
  np.testing.assert_array_equal(coding.decompress(data, tables),
                                symbols[None, None])
  # Near the empirical entropy (the histogram is the data's own).
  entropy_bits = 0.0
  for c in range(3):
    _, counts = np.unique(symbols[:, c], return_counts=True)
    p = counts / counts.sum()
    entropy_bits -= (counts * np.log2(p)).sum()
  assert len(data) * 8 < 1.05 * entropy_bits + 64 * 8
  # A value far outside calibration goes through the escape.
  far = symbols[:2].copy()
  far[0, 1] = 1000
  np.testing.assert_array_equal(
      coding.decompress(coding.compress(far[None, None], tables), tables),
      far[None, None])


def test_histogram_tables_refuse_no_symbols():
  with pytest.raises(ValueError, match="non-empty integer"):
    symbol_tables.tables_from_symbols(np.zeros((0, 4), np.int32))
  with pytest.raises(ValueError, match="non-empty integer"):
    symbol_tables.tables_from_symbols(np.zeros((3, 4), np.float32))
