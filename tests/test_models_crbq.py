"""CR+BQ: the byte format (size, round trip within scale / 2, every fault a
ValueError), 8-bit quantization with a straight-through gradient, a falling
head-distillation loss, and the `SplitModel` interface."""

import struct

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hecsb_jax.models import crbq
from hecsb_jax.models import distill_losses as dl
from hecsb_jax.models import hecsb_bottleneck as hb
from hecsb_jax.models.split import SplitModel

K, C_A, C_T, SIZE = 4, 16, 12, 32  # z [B, 8, 8, K]

_apply = nnx.jit(lambda m, x, training: m(x, training=training),
                 static_argnames="training")
_edge_symbols = nnx.jit(lambda m, x: m.edge_symbols(x))
_decode_symbols = nnx.jit(lambda m, q: m.decode_symbols(q))


def _bottleneck(seed=0, **kwargs):
  acquisition = hb.ShallowAcquisition((8, C_A), rngs=nnx.Rngs(seed))
  return crbq.CrbqBottleneck(acquisition, C_A, K, C_T, decoder_width=16,
                             rngs=nnx.Rngs(seed + 1), **kwargs)


def _images(n=8, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, SIZE, SIZE, 3))


def _tensor(kind, seed=0):
  rs = np.random.default_rng(seed)
  return {
      "normal": rs.normal(size=(5, 7, 3)) * 3.0,
      "positive": rs.uniform(2.0, 9.0, size=(4, 4, 6)),
      "negative": -rs.uniform(0.5, 1.0, size=(3, 2, 2)),
      "zeros": np.zeros((2, 3, 4)),
      "constant": np.full((2, 2, 2), -1.25),
      "wide": rs.normal(size=(6, 6, 2)) * 1e4,
      "one_element": np.array([[[0.3]]]),
  }[kind].astype(np.float32)


# ------------------------------------------------------------ byte format


@pytest.mark.parametrize("shape", [(1, 1, 1), (28, 28, 6), (7, 5, 24)])
def test_byte_count_is_header_plus_tensor_size(shape):
  h, w, k = shape
  z = np.random.default_rng(0).normal(size=shape)
  assert crbq.HEADER_SIZE == 16
  assert len(crbq.to_bytes(z)) == crbq.num_bytes(shape) == 16 + h * w * k


@pytest.mark.parametrize("kind", ["normal", "positive", "negative", "zeros",
                                  "constant", "wide", "one_element"])
def test_round_trip_dequantizes_within_half_a_step(kind):
  z = _tensor(kind)
  data = crbq.to_bytes(z)
  z_hat = crbq.from_bytes(data, shape=z.shape)
  assert z_hat.shape == z.shape and z_hat.dtype == np.float32
  q = crbq.unpack(data)
  assert q.scale > 0 and 0 <= q.zero_point <= 255
  # Half a step, plus float32 rounding of the products.
  tol = float(q.scale) / 2 * (1 + 1e-5) + 1e-6 * float(np.max(np.abs(z)))
  assert np.max(np.abs(z_hat - z)) <= tol
  if kind == "zeros":
    np.testing.assert_array_equal(z_hat, z)
  # Bytes -> tensor -> bytes is the identity on the codes.
  assert crbq.pack(q) == data


def _payload(shape=(3, 4, 2)):
  return crbq.to_bytes(np.random.default_rng(1).normal(size=shape))


def _with_header_field(data, index, value):
  fields = list(struct.unpack_from("<4sBHHHfB", data))
  fields[index] = value
  return struct.pack("<4sBHHHfB", *fields) + data[crbq.HEADER_SIZE:]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:10], "truncated CR\\+BQ tensor"),
    (lambda d: b"", "truncated CR\\+BQ tensor"),
    (lambda d: d[:-1], "truncated CR\\+BQ payload"),
    (lambda d: d[:crbq.HEADER_SIZE], "truncated CR\\+BQ payload"),
    (lambda d: d + b"\0", "trailing bytes"),
    (lambda d: b"HJRC" + d[4:], "not a CR\\+BQ tensor: magic"),
    (lambda d: _with_header_field(d, 1, 2), "unsupported CR\\+BQ version 2"),
    (lambda d: _with_header_field(d, 3, 0), "zero dimension"),
    (lambda d: _with_header_field(d, 5, float("nan")), "scale nan"),
    (lambda d: _with_header_field(d, 5, -1.0), "scale -1.0"),
    (lambda d: _with_header_field(d, 5, 0.0), "scale 0.0"),
    (lambda d: _with_header_field(d, 2, 4), "truncated CR\\+BQ payload"),
    (lambda d: _with_header_field(d, 2, 2), "trailing bytes"),
])
def test_corrupt_inputs_raise_value_errors_naming_the_fault(mutate, message):
  data = mutate(_payload())
  with pytest.raises(ValueError, match=message):
    crbq.from_bytes(data)


def test_unexpected_shape_raises():
  data = _payload((3, 4, 2))
  crbq.from_bytes(data, shape=(3, 4, 2))
  with pytest.raises(ValueError, match=r"shape \(3, 4, 2\), expected"
                     r" \(3, 4, 3\)"):
    crbq.from_bytes(data, shape=(3, 4, 3))


def test_invalid_tensors_are_refused():
  with pytest.raises(ValueError, match="one image"):
    crbq.to_bytes(np.zeros((2, 3, 4, 5)))
  with pytest.raises(ValueError, match="non-finite"):
    crbq.to_bytes(np.array([[[np.nan]]]))
  with pytest.raises(ValueError, match="dimension"):
    crbq.to_bytes(np.zeros((1, 1, 70000)))


def test_numpy_and_jax_quantization_agree():
  z = np.random.default_rng(2).normal(size=(3, 5, 6, 4)).astype(np.float32)
  q_jax = jax.jit(crbq.quantize)(z)
  for i in range(3):
    q_np = crbq.quantize(z[i], xp=np)
    np.testing.assert_array_equal(q_jax.codes[i], q_np.codes)
    assert float(q_jax.scale[i]) == float(q_np.scale)
    assert int(q_jax.zero_point[i]) == int(q_np.zero_point)


def test_straight_through_gradient_is_identity():
  z = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
  g = jax.grad(lambda z: jnp.sum(jnp.sin(crbq.fake_quantize(z))))(z)
  np.testing.assert_allclose(g, jnp.cos(crbq.fake_quantize(z)), rtol=1e-6)
  np.testing.assert_array_equal(crbq.fake_quantize(z),
                                crbq.dequantize(crbq.quantize(z)))


# ------------------------------------------------------------------ model


def test_shapes_bits_and_quantization_by_mode():
  model = _bottleneck()
  x = _images(3)
  features, aux = _apply(model, x, True)
  assert features.shape == (3, 8, 8, C_T) and features.dtype == jnp.float32
  assert aux["y"].shape == (3, 8, 8, K) and "y_hat" not in aux
  # The exact payload: 16 header bytes + 8·8·K codes, per image.
  np.testing.assert_array_equal(aux["bits"],
                                np.full(3, 8.0 * (16 + 64 * K)))
  _, aux = _apply(model, x, False)
  np.testing.assert_array_equal(aux["y_hat"], crbq.dequantize(
      crbq.quantize(aux["y"])))
  assert np.any(aux["y_hat"] != aux["y"])


def test_server_decodes_from_bytes_what_the_eval_forward_computes():
  model = _bottleneck()
  model.eval()
  x = _images(2)
  payloads = crbq.pack_batch(_edge_symbols(model, x))
  assert [len(p) for p in payloads] == [crbq.num_bytes((8, 8, K))] * 2
  q = crbq.unpack_batch(payloads, shape=(8, 8, K))
  features = _decode_symbols(model, q)
  expected, _ = _apply(model, x, False)
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def _target(x):
  """A fixed stand-in for the teacher's split features: [B, 8, 8, C_T]."""
  pooled = jnp.mean(x.reshape(x.shape[0], 8, 4, 8, 4, 3), axis=(2, 4))
  w = jax.random.normal(jax.random.key(7), (3, C_T))
  return jnp.tanh(4.0 * pooled @ w)


@pytest.mark.parametrize("quantize_in_training", [False, True])
def test_head_distillation_loss_falls_under_adam(quantize_in_training):
  model = _bottleneck(quantize_in_training=quantize_in_training)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-2)
  x = _images()
  target = _target(x)

  @jax.jit
  def step(params, rest, opt_state):
    def loss_fn(params):
      # copy=True: fresh Variables in this trace, so the acquisition's
      # BatchNorm may update its statistics (returned as the new rest).
      model = nnx.merge(graphdef, params, rest, copy=True)
      features, aux = model(x, training=True)
      # Stage 1 of CR+BQ: β = 0, the MSE alone (`bits` is a constant).
      loss = dl.distortion_rate(features, target, aux["bits"], 0.0)[0]
      return loss, nnx.state(model, nnx.Not(nnx.Param))

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  opt_state = tx.init(params)
  losses = []
  for _ in range(30):
    params, rest, opt_state, loss = step(params, rest, opt_state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


class _Toy(nnx.Module):
  """Backbone with `features`/`tail`: split "b" at stride 4, C_A channels."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(3, C_A, (3, 3), strides=4, rngs=rngs)
    self.bn = nnx.BatchNorm(C_A, rngs=rngs)
    self.fc = nnx.Linear(C_A, 5, rngs=rngs)

  def features(self, x, until):
    assert until == "b"
    return jax.nn.relu(self.bn(self.conv(x)))

  def tail(self, h, after):
    assert after == "b"
    return self.fc(jnp.mean(h, axis=(1, 2)))

  def __call__(self, x):
    return self.tail(self.features(x, "b"), "b")


def test_plugs_into_split_model_with_a_teacher_prefix():
  teacher = _Toy(nnx.Rngs(3))
  teacher.eval()
  bottleneck = crbq.CrbqBottleneck(
      hb.TeacherPrefix(nnx.clone(teacher), "b"), C_A, K, C_A,
      decoder_width=16, rngs=nnx.Rngs(4))
  student = SplitModel(nnx.clone(teacher), "b", bottleneck)
  pair = dl.TeacherStudent(teacher, student)
  pair.train()
  batch = {"image": _images(2), "label": jnp.array([1, -1])}
  stage1 = nnx.jit(lambda p, b, k: dl.make_stage1_loss(
      0.0, reuse_teacher_features=True)(p, b, k))
  stage2 = nnx.jit(lambda p, b, k: dl.make_stage2_loss()(p, b, k))
  for loss_fn in (stage1, stage2):
    loss, metrics = loss_fn(pair, batch, jax.random.key(0))
    assert np.isfinite(float(loss))
    assert float(metrics["bits_per_image"]) == 8.0 * (16 + 8 * 8 * K)
  q = nnx.jit(lambda s, x: s.edge_symbols(x))(student, batch["image"])
  assert q.codes.shape == (2, 8, 8, K) and q.codes.dtype == jnp.uint8
  logits = nnx.jit(lambda s, q: s.logits_from_symbols(q))(student, q)
  assert logits.shape == (2, 5)
  student.project_()  # a no-op, as `dl.project` calls it after each step
