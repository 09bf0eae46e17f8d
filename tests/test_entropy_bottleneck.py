"""Tests for hecsb_jax.entropy.bottleneck and rate (noise, rounding, tables)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from hecsb_jax.coding import CodingTables
from hecsb_jax.entropy import bottleneck as bottleneck_lib
from hecsb_jax.entropy import rate
from hecsb_jax.entropy import tables_from_pmf

C = 8
# Per-channel Laplace scales, from nearly deterministic to wide, as in a
# learned latent where a few channels carry most of the information.
SCALES = np.array([0.2, 0.5, 1.0, 1.5, 2.5, 4.0, 7.0, 12.0])


def _latents(n: int, seed: int) -> np.ndarray:
  """[n, 4, 4, C] float32 Laplace latents (batch, spatial, channels)."""
  rs = np.random.default_rng(seed)
  return rs.laplace(0.0, SCALES, size=(n, 4, 4, C)).astype(np.float32)


@functools.partial(nnx.jit, static_argnames="training")
def _apply(model, y, training, rng=None):
  """model(y, training, rng), compiled (op-by-op dispatch is slow on CPU)."""
  return model(y, training=training, rng=rng)


@pytest.fixture(scope="module")
def trained():
  """An EntropyBottleneck whose prior was fitted to `_latents` data."""
  model = bottleneck_lib.EntropyBottleneck(C, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adam(1e-2)

  def loss(params, y, key):
    _, aux = nnx.merge(graphdef, params)(y, training=True, rng=key)
    return jnp.mean(aux["bits"])

  @jax.jit
  def step(params, opt_state, y, key):
    g = jax.grad(loss)(params, y, key)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  data = _latents(2048, 0)
  rs = np.random.default_rng(0)
  opt_state = tx.init(params)
  key = jax.random.key(0)
  for i in range(300):
    batch = jnp.asarray(data[rs.integers(0, len(data), 32)])
    key_i = jax.random.fold_in(key, i)
    params, opt_state = step(params, opt_state, batch, key_i)
  return nnx.merge(graphdef, params)


@pytest.fixture(scope="module")
def tables(trained):
  return bottleneck_lib.build_tables(trained, precision=16, tail_mass=2**-8)


def test_rounding_forward_equals_round_half_to_even():
  y = jnp.array([-2.5, -1.5, -0.5, -0.49, 0.0, 0.5, 0.51, 1.5, 2.5, 3.7,
                 -1e6 - 0.5, 8388607.5, 1e9])
  np.testing.assert_array_equal(bottleneck_lib.round_st(y), jnp.round(y))


def test_rounding_gradient_is_identity():
  model = bottleneck_lib.EntropyBottleneck(C, rngs=nnx.Rngs(0))
  y = jnp.asarray(_latents(2, 1))
  jac = jax.jit(jax.jacobian(lambda y: model(y, training=False)[0]))(y)
  eye = jnp.eye(y.size).reshape(y.shape + y.shape)
  np.testing.assert_array_equal(jac, eye)
  # And through a loss on y_hat: d/dy sum(w * y_hat) is exactly w.
  w = jnp.asarray(np.random.default_rng(0).normal(size=y.shape), jnp.float32)
  g = jax.jit(jax.grad(lambda y: jnp.sum(w * model(y, False)[0])))(y)
  np.testing.assert_array_equal(g, w)


def test_coding_path_returns_rounded_values_and_named_aux():
  model = bottleneck_lib.EntropyBottleneck(C, rngs=nnx.Rngs(0))
  y = jnp.asarray(_latents(3, 2))
  y_hat, aux = _apply(model, y, False)
  np.testing.assert_array_equal(y_hat, jnp.round(y))
  assert set(aux) == {"y", "y_hat", "likelihoods", "bits"}
  np.testing.assert_array_equal(
      bottleneck_lib.EntropyBottleneck.quantize(y), jnp.round(y).astype(int)
  )


def test_training_noise_is_uniform_within_half_and_keyed():
  model = bottleneck_lib.EntropyBottleneck(C, rngs=nnx.Rngs(0))
  y = jnp.asarray(_latents(64, 3))
  y_tilde, aux = _apply(model, y, True, jax.random.key(5))
  again, _ = _apply(model, y, True, jax.random.key(5))
  other, _ = _apply(model, y, True, jax.random.key(6))
  noise = np.asarray(y_tilde - y)
  assert set(aux) == {"y", "y_tilde", "likelihoods", "bits"}
  assert np.all(np.abs(noise) <= 0.5 + 1e-5)
  # Mean 0 and variance 1/12 within ~5 standard errors (n = 8192).
  assert abs(noise.mean()) < 5 * np.sqrt(1 / 12 / noise.size)
  assert abs(noise.var() - 1 / 12) < 0.005
  np.testing.assert_array_equal(y_tilde, again)
  assert not np.array_equal(y_tilde, other)


def test_bits_are_per_example_sums_of_minus_log2_likelihood():
  model = bottleneck_lib.EntropyBottleneck(C, rngs=nnx.Rngs(0))
  y = jnp.asarray(_latents(5, 4))
  _, aux = _apply(model, y, False)
  assert aux["bits"].shape == (5,)
  want = -np.sum(np.log2(np.asarray(aux["likelihoods"], np.float64)),
                 axis=(1, 2, 3))
  np.testing.assert_allclose(aux["bits"], want, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_bad_inputs_raise_clear_errors(training):
  model = bottleneck_lib.EntropyBottleneck(C, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="channels last"):
    model(jnp.zeros((2, C + 1)), training=training, rng=jax.random.key(0))
  with pytest.raises(ValueError, match="batch first"):
    model(jnp.zeros((C,)), training=training, rng=jax.random.key(0))
  if training:
    with pytest.raises(ValueError, match="rng"):
      model(jnp.zeros((2, C)), training=True)


def test_training_bits_are_at_least_coding_bits_on_average(trained):
  # Why this should hold: if the model matched the data, training bits would
  # be the differential entropy h(Y + U), and coding bits the entropy of
  # round(Y). Averaged over a random shift of the integer grid the two are
  # equal (subtractive dither: H(Q(Y + s) | s) = h(Y + U)); for a fixed
  # grid and a unimodal density centred on an integer -- what the trained
  # prior and these Laplace latents give -- rounding puts the mode in one bin
  # and the discrete entropy is the smaller. It is an empirical property, not
  # a theorem, so we compare means over 2^17 symbols with a 4-standard-error
  # allowance on the paired difference.
  y = jnp.asarray(_latents(1024, 7))
  _, train_aux = _apply(trained, y, True, jax.random.key(1))
  _, code_aux = _apply(trained, y, False)
  diff = np.asarray(
      jnp.log2(code_aux["likelihoods"]) - jnp.log2(train_aux["likelihoods"]),
      np.float64,
  ).ravel()
  stderr = diff.std() / np.sqrt(diff.size)
  assert diff.mean() > -4 * stderr, (diff.mean(), stderr)


def test_support_holds_all_but_the_tail_mass(trained):
  tail_mass = 2**-8
  lo, hi = bottleneck_lib.support(trained.prior, tail_mass)
  pmf = bottleneck_lib.integer_pmf(trained.prior, lo, int(np.max(hi - lo)) + 1)
  inside = np.array([pmf[c, : hi[c] - lo[c] + 1].sum() for c in range(C)])
  assert np.all(inside >= 1 - tail_mass)
  # ...and is not wastefully wide: dropping either end loses the guarantee.
  for c in range(C):
    if hi[c] > lo[c]:
      assert pmf[c, 1 : hi[c] - lo[c] + 1].sum() < 1 - tail_mass / 2 and (
          pmf[c, : hi[c] - lo[c]].sum() < 1 - tail_mass / 2
      )
  # Wider Laplace scale, wider support.
  assert np.all(np.diff(hi - lo) >= 0)


def test_tables_have_the_coder_layout(tables):
  assert isinstance(tables, CodingTables)
  assert tables.cdf.dtype == np.int32 and tables.cdf.shape[0] == C
  assert tables.precision == 16
  for c in range(C):
    row = tables.cdf[c, : tables.cdf_length[c]]
    assert row[0] == 0 and row[-1] == 2**16
    assert np.all(np.diff(row) >= 1)


def test_estimated_bits_match_integer_tables(trained, tables):
  # The JAX likelihood of round(y) and the quantized 16-bit tables describe
  # the same distribution; they differ only by frequency rounding, the
  # escape's reserved slot and escapes' raw bits: well under 1%.
  y = _latents(256, 8)
  _, aux = _apply(trained, jnp.asarray(y), False)
  estimated = float(jnp.sum(aux["bits"]))
  ideal = rate.ideal_bits(np.round(y).astype(np.int32), tables)
  assert ideal == pytest.approx(estimated, rel=0.01)


def test_symbol_bits_charge_escapes_per_format():
  table = tables_from_pmf(
      np.array([[0.25, 0.5, 0.25]]), np.array([-1], np.int32), precision=8
  )
  freq = np.diff(table.cdf[0, : table.cdf_length[0]])
  bits = rate.symbol_bits(np.array([[0], [2], [-2], [5]]), table)[:, 0]
  escape = 8 - np.log2(freq[3])
  # idx 1 is in range; value 2 is idx 3 = K -> d = 1, g = 2, u = 1; value -2
  # is idx -1 -> d = 0, g = 1, u = 0; value 5 is idx 6 -> d = 7, g = 8, u = 3.
  np.testing.assert_allclose(
      bits,
      [8 - np.log2(freq[1]), escape + 6 + 1, escape + 6, escape + 6 + 3],
  )


def test_compressed_size_matches_estimated_bits(trained, tables):
  from hecsb_jax import coding  # the native coder (issue 3, coder half)

  y = _latents(2048, 9)  # 2^15 symbols
  symbols = np.asarray(bottleneck_lib.EntropyBottleneck.quantize(y))
  data = coding.compress(symbols, tables)
  np.testing.assert_array_equal(coding.decompress(data, tables), symbols)
  ideal = rate.ideal_bits(symbols, tables)
  header_bytes = len(coding.compress(symbols[:0], tables))
  payload_bits = 8 * (len(data) - header_bytes)
  assert payload_bits >= ideal - 64  # no coder beats the ideal by > 8 bytes
  assert payload_bits <= 1.01 * ideal + 64
  # And against the JAX estimate of the same symbols.
  _, aux = _apply(trained, jnp.asarray(y), False)
  assert 8 * len(data) == pytest.approx(float(jnp.sum(aux["bits"])), rel=0.02)


def test_values_far_outside_the_tables_round_trip(tables):
  from hecsb_jax import coding

  rs = np.random.default_rng(0)
  symbols = rs.integers(-3, 4, size=(50, C)).astype(np.int32)
  far = rs.integers(-(2**31), 2**31 - 1, size=symbols[::7, ::3].shape)
  symbols[::7, ::3] = far
  data = coding.compress(symbols, tables)
  np.testing.assert_array_equal(coding.decompress(data, tables), symbols)
  # rate.symbol_bits charges escapes as the coder does: sizes agree to the
  # few bytes of header and final state, escapes and all.
  header_bytes = len(coding.compress(symbols[:0], tables))
  bits = rate.symbol_bits(symbols, tables)
  ideal = float(bits.sum())
  assert bits[::7, ::3].sum() > 0.3 * ideal  # escapes are a real share
  assert abs(8 * (len(data) - header_bytes) - ideal) <= 64


def test_tables_survive_checkpoint_save_and_restore(tables, tmp_path):
  from hecsb_jax import coding

  state = {"tables": dict(tables._asdict())}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", state)
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(tmp_path / "ckpt")["tables"]
  assert set(restored) == set(tables._fields)
  for name in ("cdf", "cdf_length", "offset"):
    got, want = np.asarray(restored[name]), getattr(tables, name)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  assert int(restored["precision"]) == tables.precision
  again = CodingTables(
      cdf=np.asarray(restored["cdf"]),
      cdf_length=np.asarray(restored["cdf_length"]),
      offset=np.asarray(restored["offset"]),
      precision=int(restored["precision"]),
  )
  symbols = np.asarray(
      bottleneck_lib.EntropyBottleneck.quantize(_latents(16, 10))
  )
  assert coding.compress(symbols, again) == coding.compress(symbols, tables)


def test_build_tables_accepts_bottleneck_or_prior_and_rejects_narrow_tables(
    trained, tables
):
  again = bottleneck_lib.build_tables(trained.prior)
  for name in ("cdf", "cdf_length", "offset"):
    np.testing.assert_array_equal(getattr(again, name), getattr(tables, name))
  # The widest channel (Laplace scale 12) spans far more than 2^4 - 1 bins.
  with pytest.raises(ValueError, match="raise precision or tail_mass"):
    bottleneck_lib.build_tables(trained, precision=4)
