"""The whole deployment path on real pieces, against the JAX model offline.

    tiny HECS-B model ─► hecsb_jax.export (export_model: head.tflite,
    tables.npz, manifest.json) ─► hecsb_jax.edge.EdgeClient (Pillow crop,
    LiteRT head, coding.compress, HTTP) ─► hecsb_jax.serve (create_app
    under uvicorn) ─► class

must give what the JAX model gives with no export and no server:
`logits_from_symbols(edge_symbols(normalize(crop)))`, and the bytes the
client sends must be `coding.compress` of the JAX head's symbols (where
the .tflite head rounds a value within float error of .5 the other way
the symbols differ by one there; the fraction equal is reported, as
experiments/export_check does). The model is the server tests' toy
(tests/serve_fixtures.py), so this takes seconds, not minutes.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edge_fixtures as fx  # pylint: disable=wrong-import-position

from hecsb_jax import coding  # pylint: disable=wrong-import-position
from hecsb_jax.data import imagenet_pipeline  # pylint: disable=wrong-import-position
from hecsb_jax.edge import client as client_lib  # pylint: disable=wrong-import-position

TOKEN = "edge-path-token"
# Sizes around the crop: landscape, portrait, square, much larger.
SIZES = [(48, 40), (37, 60), (37, 37), (200, 150), (64, 64), (90, 41)]


def _images(directory: Path) -> list[Path]:
  """Smooth colour gradients with noise: the resize has structure to
  keep, and the symbols take many values."""
  paths = []
  for i, (w, h) in enumerate(SIZES):
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 255
    pixels = np.clip(base * rng.uniform(0.3, 1.0, 3)
                     + rng.normal(0, 30, (h, w, 3)), 0, 255)
    paths.append(directory / f"im{i}.png")
    Image.fromarray(pixels.astype(np.uint8)).save(paths[-1])
  return paths


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
  """(model, manifest, server URL, image paths): the toy exported and
  served."""
  root = tmp_path_factory.mktemp("edge_path")
  model, manifest = fx.export_toy_model(root / "export")
  images = _images(root)
  with fx.real_server(model, TOKEN, max_batch=2, batch_wait_ms=1) as url:
    yield model, manifest, url, images


@pytest.mark.slow
def test_export_client_server_equal_the_jax_model_offline(deployed):
  model, manifest, url, images = deployed
  assert manifest.model_id == coding.model_id(model.tables).hex()
  with client_lib.EdgeClient(manifest.directory, url, TOKEN) as client:
    assert client.health()["model_id"] == manifest.model_id
    encoded = [client.encode(path) for path in images]
    answers = [client.predict_encoded(path, e)
               for path, e in zip(images, encoded)]

  # The client's crop is evaluation's crop.
  spec = manifest.input
  for path, e in zip(images, encoded):
    with Image.open(path) as img:
      np.testing.assert_array_equal(
          e.pixels, imagenet_pipeline.resize_center_crop(
              img.convert("RGB"), spec.resize, spec.size,
              spec.interpolation))

  want, classes = fx.jax_offline(model, np.stack([e.pixels
                                                  for e in encoded]))
  got = np.concatenate([e.symbols for e in encoded])
  assert got.shape == want.shape == (len(images), *manifest.symbols.shape)
  # Not trivially equal: the symbols take several values, most not 0.
  assert len(np.unique(want)) >= 5, np.unique(want)
  assert (want != 0).mean() > 0.3, (want != 0).mean()
  assert np.abs(got - want).max() <= 1  # only .5-boundary ties
  assert (got == want).mean() >= 0.99, (got == want).mean()
  same = 0
  for i, e in enumerate(encoded):
    compressed = coding.compress(want[i:i + 1], model.tables)
    if np.array_equal(e.symbols, want[i:i + 1]):
      same += 1
      assert e.data == compressed, f"image {i}: same symbols, other bytes"
  assert same >= len(images) - 1, f"{same}/{len(images)} images equal"
  print(f"symbols equal {(got == want).mean():.4f}, images with equal"
        f" symbols and bytes {same}/{len(images)}")

  for i, answer in enumerate(answers):
    assert answer.model == model.name
    assert answer.num_bytes == len(encoded[i].data)
    assert answer.label == classes[i], (i, answer.label, classes[i])
    assert answer.top5[0][0] == answer.label


@pytest.mark.slow
def test_real_server_refusals_reach_the_client(deployed):
  model, manifest, url, images = deployed
  with client_lib.EdgeClient(manifest.directory, url, "wrong") as client:
    with pytest.raises(client_lib.ServerError, match="HTTP 401: missing or"
                       " wrong token") as e:
      client.predict(images[0])
  assert e.value.status == 401
  # A container for other tables: the server names the model id.
  with client_lib.EdgeClient(manifest.directory, url, TOKEN) as client:
    encoded = client.encode(images[0])
    from hecsb_jax.entropy import build_tables  # pylint: disable=g-import-not-at-top
    other = build_tables(model.module.bottleneck.entropy, tail_mass=2**-6)
    foreign = dict(vars(encoded),
                   data=coding.compress(encoded.symbols, other))
    with pytest.raises(client_lib.ServerError, match="HTTP 409") as e:
      client.predict_encoded(images[0], client_lib.Encoded(**foreign))
  assert e.value.status == 409
