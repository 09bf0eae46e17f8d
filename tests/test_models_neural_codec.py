"""Factorized-prior image codec: shapes, the rate, the loss convention, a
falling loss, and symbols that survive the native coder."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hecsb_jax import coding
from hecsb_jax.entropy import build_tables
from hecsb_jax.models import neural_codec as nc

N, M, SIZE = 8, 6, 32  # latent 2×2 per image
LMBDA = 0.01

# Compiled: op-by-op dispatch of the convolutions is slow on CPU.
_apply = nnx.jit(lambda codec, x, rng, training: codec(x, rng,
                                                       training=training),
                 static_argnames="training")
_edge_symbols = nnx.jit(lambda codec, x: codec.edge_symbols(x))
_decode_symbols = nnx.jit(lambda codec, s: codec.decode_symbols(s))


def _images(n=6, seed=0):
  """Smooth random images in [0, 1]: 4×4 noise, bilinearly upsampled."""
  coarse = jax.random.uniform(jax.random.key(seed), (n, 4, 4, 3))
  return jax.image.resize(coarse, (n, SIZE, SIZE, 3), "bilinear")


def _codec(seed=0):
  # prior_init_scale ~ the scale of y at initialization, so the first
  # losses measure the transforms, not a badly placed prior.
  return nc.FactorizedPriorCodec(N, M, prior_init_scale=2.0,
                                 rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def trained():
  """(codec after 40 Adam steps on `_images`, the loss of each step)."""
  codec = _codec()
  graphdef, params, rest = nnx.split(codec, nnx.Param, ...)
  tx = optax.adam(3e-3)
  x = _images()

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(params):
      x_hat, aux = nnx.merge(graphdef, params, rest)(x, key, training=True)
      return nc.rate_distortion_loss(x, x_hat, aux["bits"], LMBDA)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  losses = []
  for i in range(40):
    params, opt_state, loss = step(params, opt_state,
                                   jax.random.fold_in(jax.random.key(1), i))
    losses.append(float(loss))
  nnx.update(codec, params)
  return codec, losses


def test_shapes_and_bits_equal_minus_sum_log2_likelihoods():
  codec = _codec()
  x = _images(3)
  for training in (True, False):
    x_hat, aux = _apply(codec, x, jax.random.key(1), training)
    assert x_hat.shape == x.shape and x_hat.dtype == jnp.float32
    assert aux["y"].shape == (3, SIZE // 16, SIZE // 16, M)
    assert aux["likelihoods"].shape == aux["y"].shape
    assert aux["bits"].shape == (3,) and aux["bpp"].shape == (3,)
    bits = np.asarray(aux["bits"])
    assert np.all(np.isfinite(bits)) and np.all(bits > 0)
    expected = -np.sum(np.log2(np.asarray(aux["likelihoods"], np.float64)),
                       axis=(1, 2, 3))
    np.testing.assert_allclose(bits, expected, rtol=1e-5)
    np.testing.assert_allclose(aux["bpp"], bits / SIZE**2, rtol=1e-6)
  symbols = _edge_symbols(codec, x)
  assert symbols.shape == (3, 2, 2, M) and symbols.dtype == jnp.int32
  assert _decode_symbols(codec, symbols).shape == x.shape


def test_eval_mode_rounds_and_train_mode_adds_noise():
  codec = _codec()
  x = _images(2)
  encode = nnx.jit(lambda codec, x, rng: codec.encode(x, rng))
  codec.eval()
  y_hat, aux = encode(codec, x, None)
  np.testing.assert_array_equal(y_hat, _edge_symbols(codec, x))
  codec.train()
  y_tilde, aux = encode(codec, x, jax.random.key(2))
  noise = np.asarray(y_tilde - aux["y"])
  assert np.all(np.abs(noise) <= 0.5 + 1e-5) and np.std(noise) > 0.1
  with pytest.raises(ValueError, match="rng"):
    encode(codec, x, None)


def test_rate_distortion_loss_is_lambda_255_squared_mse_plus_bpp():
  x = jnp.zeros((2, 16, 16, 3))
  x_hat = jnp.full_like(x, 2.0 / 255.0)  # MSE = 4 / 255²
  bits = jnp.array([256.0, 512.0])  # 1 and 2 bpp
  loss, metrics = nc.rate_distortion_loss(x, x_hat, bits, 0.5)
  assert float(metrics["bpp"]) == pytest.approx(1.5)
  assert float(loss) == pytest.approx(0.5 * 4.0 + 1.5, rel=1e-5)


def test_loss_falls_under_adam(trained):
  _, losses = trained
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_decoded_symbols_equal_the_encoders_and_decode_the_image(trained):
  codec, _ = trained
  codec.eval()
  tables = build_tables(codec.entropy)
  x = _images(3, seed=5)
  symbols = np.asarray(_edge_symbols(codec, x))
  data = coding.compress(symbols, tables)
  decoded = coding.decompress(data, tables)
  np.testing.assert_array_equal(decoded, symbols)
  x_hat = _decode_symbols(codec, decoded)
  assert float(jnp.min(x_hat)) >= 0.0 and float(jnp.max(x_hat)) <= 1.0
  x_hat_eval, _ = _apply(codec, x, None, False)
  np.testing.assert_allclose(x_hat, jnp.clip(x_hat_eval, 0.0, 1.0),
                             atol=1e-5)


def test_rejects_sizes_that_are_not_multiples_of_16():
  with pytest.raises(ValueError, match="multiples of 16"):
    _codec().edge_symbols(jnp.zeros((1, 24, 32, 3)))


def test_random_patches_are_windows_of_each_image():
  x = jnp.arange(3 * 8 * 8 * 2, dtype=jnp.float32).reshape(3, 8, 8, 2)
  patches = nc.random_patches(x, 4, jax.random.key(0))
  assert patches.shape == (3, 4, 4, 2)
  for image, patch in zip(np.asarray(x), np.asarray(patches)):
    # Entries are distinct, so the window's corner says where it is.
    r, q = map(int, np.argwhere(image[..., 0] == patch[0, 0, 0])[0])
    np.testing.assert_array_equal(image[r:r + 4, q:q + 4], patch)
  # The places differ between images and keys; the whole image is itself.
  corners = {float(p[0, 0, 0]) - 128 * i
             for k in range(4)
             for i, p in enumerate(nc.random_patches(x, 4, jax.random.key(k)))}
  assert len(corners) > 1
  assert nc.random_patches(x, 8, jax.random.key(0)) is x
  with pytest.raises(ValueError, match="patch side"):
    nc.random_patches(x, 9, jax.random.key(0))
