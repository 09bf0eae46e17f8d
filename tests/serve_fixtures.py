"""Shared by the server's tests (test_serve.py, test_serve_faults.py): a
tiny random HECS-B model, payloads with their offline predictions, and
one request per refusal of the HTTP contract."""

import asyncio
from pathlib import Path
import struct

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hecsb_jax import coding
from hecsb_jax.entropy import build_tables
from hecsb_jax.train import saved_model
from hecsb_jax.serve import app as app_lib

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}",
        "content-type": app_lib.CONTENT_TYPE}
IMAGE_SIZE = 32
M = 4


class Toy(nnx.Module):
  """Backbone with the `features`/`tail` API: split "b" gives 8x8x16."""

  def __init__(self, rngs):
    self.conv_a = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
    self.conv_b = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
    self.bn_b = nnx.BatchNorm(16, rngs=rngs)
    self.fc = nnx.Linear(16, 10, rngs=rngs)

  def features(self, x, until):
    assert until == "b"
    x = jax.nn.relu(self.conv_a(x))
    return jax.nn.relu(self.bn_b(self.conv_b(x)))

  def tail(self, h, after):
    return self.fc(jnp.mean(h, axis=(1, 2)))


def _build():
  teacher = Toy(nnx.Rngs(0))
  section = dict(acquisition="shallow", train_acquisition=True,
                 shallow_widths=(8, 16), num_measurements=M,
                 decoder_width=16, decoder_blocks=1,
                 measurement_init_std=1.0, prior_init_scale=4.0)
  return saved_model.build("hecsb", teacher, split="b", section=section,
                           value=1e-4, seed=0, channels=16)


def tiny_model(name="toy_hecsb", tail_mass=2**-8):
  """A random HECS-B `SavedModel` (symbols [8, 8, 4]) with its tables."""
  # Under one jit: eager initialization compiles each initializer apart,
  # tens of seconds on a loaded 2-core machine.
  module = nnx.jit(_build)()
  module.eval()
  tables = build_tables(module.bottleneck.entropy, tail_mass=tail_mass)
  return saved_model.SavedModel(
      path=Path(name), method="hecsb", value=1e-4, module=module,
      tables=tables, fingerprint={}, summary={}, backbone="toy", split="b",
      image_size=IMAGE_SIZE, norm=saved_model.UNIT,
      interpolation="bicubic")


def make_payloads(model, n=8, seed=1):
  """(container bytes, offline probabilities [10]) for n random images."""
  x = jax.random.normal(jax.random.key(seed),
                        (n, IMAGE_SIZE, IMAGE_SIZE, 3))
  symbols = np.asarray(nnx.jit(lambda m, x: m.edge_symbols(x))(
      model.module, x))
  data = [coding.compress(symbols[i:i + 1], model.tables)
          for i in range(len(symbols))]
  # The offline prediction, from what decoding the bytes gives back.
  back = np.concatenate([coding.decompress(d, model.tables) for d in data])
  probs = nnx.jit(lambda m, s: jax.nn.softmax(m.logits_from_symbols(s)))(
      model.module, back)
  out = [(d, np.asarray(p)) for d, p in zip(data, probs)]
  return out


def assert_matches_offline(answer, probs, model):
  """The answer's top-5 are the offline top-5 (ties in any order)."""
  assert answer["model"] == model.name
  assert answer["model_id"] == coding.model_id(model.tables).hex()
  classes = [c for c, _ in answer["top5"]]
  values = np.array([p for _, p in answer["top5"]])
  assert answer["class"] == classes[0]
  np.testing.assert_allclose(values, probs[classes], atol=1e-5)
  np.testing.assert_allclose(values, np.sort(probs)[::-1][:5], atol=1e-5)
  assert set(answer["timings_ms"]) == {"queue", "decode", "model", "total"}


def huge_shape_header(model):
  """A valid container header claiming 2^20 x 2^20 x 4 symbols."""
  data = coding.compress(np.zeros((1, 8, 8, M), np.int32), model.tables)
  header = coding.read_header(data)
  def leb128(n):
    out = bytearray()
    while True:
      byte, n = n & 0x7F, n >> 7
      out.append(byte | (0x80 if n else 0))
      if not n:
        return bytes(out)
  dims = b"".join(leb128(d) for d in (1, 1 << 20, 1 << 20, M))
  return (data[:13] + struct.pack("B", 4) + dims
          + data[header.header_size:])


async def slow_body():
  yield b"HJRC"
  await asyncio.sleep(1.0)
  yield b"x" * 10


def fault_requests(model, good, max_body_bytes):
  """(name, status, error kind, request kwargs) for each refusal."""
  other = coding.compress(coding.decompress(good, model.tables),
                          build_tables(model.module.bottleneck.entropy,
                                       tail_mass=2**-6))
  def big_chunks():  # no Content-Length: the cap must hold while streaming
    async def gen():
      for _ in range(4):
        yield b"\0" * (max_body_bytes // 2)
    return gen()
  bad = bytearray(good)
  bad[len(bad) // 2] ^= 0xFF
  post = lambda content, headers=AUTH: dict(
      method="POST", url="/v1/predict", content=content, headers=headers)
  return [
      ("no token", 401, "unauthorized",
       post(good, {"content-type": app_lib.CONTENT_TYPE})),
      ("wrong token", 401, "unauthorized",
       post(good, dict(AUTH, authorization="Bearer nope"))),
      ("wrong content type", 415, "content_type",
       post(good, dict(AUTH, **{"content-type": "application/json"}))),
      ("empty body", 400, "empty", post(b"")),
      ("too large, declared", 413, "too_large",
       post(b"\0" * (max_body_bytes + 1))),
      ("too large, streamed", 413, "too_large", post(big_chunks())),
      ("truncated", 400, "corrupt", post(good[: len(good) - 7])),
      ("truncated header", 400, "corrupt", post(good[:9])),
      ("not a container", 400, "corrupt", post(b"GIF89a" + b"\0" * 64)),
      ("corrupt payload", 400, "corrupt", post(bytes(bad))),
      ("another model's id", 409, "wrong_model", post(other)),
      ("huge claimed shape", 422, "wrong_shape",
       post(huge_shape_header(model))),
      ("slow client", 408, "timeout", post(slow_body())),
      ("unknown path", 404, "not_found",
       dict(method="GET", url="/v1/nothing")),
      ("wrong method", 405, "method_not_allowed",
       dict(method="GET", url="/v1/predict", headers=AUTH)),
  ]
