"""SVB bottleneck: shapes at stride 8, the rate, a falling distillation
loss, symbols that survive the native coder, and the `SplitModel` /
distillation interface of `HecsbBottleneck`."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hecsb_jax import coding
from hecsb_jax.entropy import build_tables
from hecsb_jax.models import distill_losses as dl
from hecsb_jax.models import svb
from hecsb_jax.models.split import SplitModel

L, C_T, SIZE = 6, 12, 32  # latent [B, 4, 4, L]
BETA = 1e-3

_apply = nnx.jit(lambda m, x, rng, training: m(x, rng, training=training),
                 static_argnames="training")
_edge_symbols = nnx.jit(lambda m, x: m.edge_symbols(x))
_decode_symbols = nnx.jit(lambda m, s: m.decode_symbols(s))


# Small on purpose: every new layer shape costs XLA compilations on CPU.
def _bottleneck(seed=0):
  return svb.SvbBottleneck(C_T, L, widths=(8, 8), decoder_width=16,
                           prior_init_scale=2.0, rngs=nnx.Rngs(seed))


def _images(n=8, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, SIZE, SIZE, 3))


def _target(x):
  """A fixed stand-in for the teacher's split features: [B, 4, 4, C_T]."""
  pooled = jnp.mean(x.reshape(x.shape[0], 4, 8, 4, 8, 3), axis=(2, 4))
  w = jax.random.normal(jax.random.key(7), (3, C_T))
  return jnp.tanh(8.0 * pooled @ w)


@pytest.fixture(scope="module")
def trained():
  """(bottleneck after 40 Adam steps of head distillation, the losses)."""
  model = _bottleneck()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(3e-3)
  x = _images()
  target = _target(x)

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(params):
      features, aux = nnx.merge(graphdef, params, rest)(x, key,
                                                        training=True)
      return dl.distortion_rate(features, target, aux["bits"], BETA)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  losses = []
  for i in range(40):
    params, opt_state, loss = step(params, opt_state,
                                   jax.random.fold_in(jax.random.key(1), i))
    losses.append(float(loss))
  nnx.update(model, params)
  return model, losses


def test_shapes_and_bits_equal_minus_sum_log2_likelihoods():
  model = _bottleneck()
  x = _images(3)
  assert model.encoder.stride == 8
  for training in (True, False):
    features, aux = _apply(model, x, jax.random.key(1), training)
    assert features.shape == (3, 4, 4, C_T)
    assert features.dtype == jnp.float32
    assert aux["y"].shape == (3, 4, 4, L)
    assert aux["likelihoods"].shape == (3, 4, 4, L)
    bits = np.asarray(aux["bits"])
    assert bits.shape == (3,)
    assert np.all(np.isfinite(bits)) and np.all(bits > 0)
    expected = -np.sum(np.log2(np.asarray(aux["likelihoods"], np.float64)),
                       axis=(1, 2, 3))
    np.testing.assert_allclose(bits, expected, rtol=1e-5)
  symbols = _edge_symbols(model, x)
  assert symbols.shape == (3, 4, 4, L) and symbols.dtype == jnp.int32
  assert _decode_symbols(model, symbols).shape == (3, 4, 4, C_T)


def test_default_encoder_is_stride_8_with_48_channels():
  # Shapes only (nothing is computed): the paper's 224×224 input.
  model = nnx.eval_shape(lambda: svb.SvbBottleneck(40, rngs=nnx.Rngs(0)))
  assert [b.conv1.out_features for b in model.encoder.blocks] == [48, 64, 48]
  y = nnx.eval_shape(lambda m: m.measure(jnp.zeros((1, 224, 224, 3))), model)
  assert y.shape == (1, 28, 28, 48)


def test_eval_mode_rounds_and_train_mode_adds_noise():
  # The mode, not an argument, chooses; `_apply` passes training=None.
  model = _bottleneck()
  x = _images(3)
  model.eval()
  _, aux = _apply(model, x, None, None)
  np.testing.assert_array_equal(aux["y_hat"], jnp.round(aux["y"]))
  np.testing.assert_array_equal(aux["y_hat"], _edge_symbols(model, x))
  model.train()
  _, aux = _apply(model, x, jax.random.key(2), None)
  noise = np.asarray(aux["y_tilde"] - aux["y"])
  assert np.all(np.abs(noise) <= 0.5 + 1e-5) and np.std(noise) > 0.1
  with pytest.raises(ValueError, match="rng"):
    _apply(model, x, None, None)  # fails while tracing, before compiling


def test_precomputed_features_are_refused():
  with pytest.raises(ValueError, match="features"):
    _bottleneck().measure(_images(1), features=jnp.zeros((1, 4, 4, 8)))


def test_distillation_loss_falls_under_adam(trained):
  _, losses = trained
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_decoded_symbols_equal_the_encoders(trained):
  model, _ = trained
  model.eval()
  tables = build_tables(model.entropy)
  symbols = np.asarray(_edge_symbols(model, _images(3, seed=5)))
  data = coding.compress(symbols, tables)
  decoded = coding.decompress(data, tables)
  np.testing.assert_array_equal(decoded, symbols)
  np.testing.assert_allclose(
      _decode_symbols(model, decoded),
      _apply(model, _images(3, seed=5), None, False)[0], atol=1e-5)


class _Toy(nnx.Module):
  """Backbone with `features`/`tail`: split "b" at stride 8, 12 channels
  (and a BatchNorm, which the teacher's and tail's views expect)."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(3, C_T, (3, 3), strides=8, rngs=rngs)
    self.bn = nnx.BatchNorm(C_T, rngs=rngs)
    self.fc = nnx.Linear(C_T, 5, rngs=rngs)

  def features(self, x, until):
    assert until == "b"
    return jax.nn.relu(self.bn(self.conv(x)))

  def tail(self, h, after):
    assert after == "b"
    return self.fc(jnp.mean(h, axis=(1, 2)))

  def __call__(self, x):
    return self.tail(self.features(x, "b"), "b")


def test_plugs_into_split_model_and_both_distillation_stages():
  teacher = _Toy(nnx.Rngs(3))
  student = SplitModel(nnx.clone(teacher), "b", _bottleneck())
  pair = dl.TeacherStudent(teacher, student)
  pair.train()
  batch = {"image": _images(2), "label": jnp.array([1, -1])}
  stage1 = nnx.jit(lambda p, b, k: dl.make_stage1_loss(BETA)(p, b, k))
  stage2 = nnx.jit(lambda p, b, k: dl.make_stage2_loss()(p, b, k))
  for loss_fn in (stage1, stage2):
    loss, metrics = loss_fn(pair, batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and float(metrics["bits_per_image"]) > 0
  pair.eval()
  symbols = nnx.jit(lambda s, x: s.edge_symbols(x))(student, batch["image"])
  logits = nnx.jit(lambda s, q: s.logits_from_symbols(q))(student, symbols)
  assert logits.shape == (2, 5)
  student.project_()  # a no-op, as `dl.project` calls it after each step
