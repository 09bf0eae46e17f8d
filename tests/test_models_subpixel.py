"""SubpixelConvTranspose: the same layer as nnx.ConvTranspose (values and
gradients), its phase table by hand, and the settings it refuses."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.models import subpixel


def _pair(kernel_size, strides, seed=0):
  ref = nnx.ConvTranspose(3, 4, kernel_size, strides, padding="SAME",
                          rngs=nnx.Rngs(seed))
  new = subpixel.SubpixelConvTranspose(3, 4, kernel_size, strides,
                                       rngs=nnx.Rngs(seed))
  bias = jax.random.normal(jax.random.key(seed + 1), (4,))
  ref.bias[...] = bias
  new.bias[...] = bias
  return ref, new


@pytest.mark.parametrize("kernel_size,strides", [
    ((5, 5), 2),  # the image codec's layer
    ((3, 3), 2), ((4, 4), 2), ((2, 2), 2), ((1, 1), 2), ((5, 5), 3),
    ((6, 6), 4), ((5, 3), (2, 1)), ((3, 3), 1),
])
def test_outputs_equal_conv_transpose(kernel_size, strides):
  ref, new = _pair(kernel_size, strides)
  np.testing.assert_array_equal(new.kernel[...], ref.kernel[...])
  x = jax.random.normal(jax.random.key(7), (2, 7, 6, 3))
  want = ref(x)
  got = new(x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_gradients_equal_conv_transpose():
  ref, new = _pair((5, 5), 2)
  x = jax.random.normal(jax.random.key(3), (2, 5, 4, 3))
  target = jax.random.normal(jax.random.key(4), (2, 10, 8, 4))

  def grads(layer):
    def loss(layer, x):
      return jnp.sum((layer(x) - target) ** 2)
    return nnx.grad(loss, argnums=(0, 1))(layer, x)

  (g_ref, gx_ref), (g_new, gx_new) = grads(ref), grads(new)
  np.testing.assert_allclose(g_new.kernel[...], g_ref.kernel[...],
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(g_new.bias[...], g_ref.bias[...], rtol=1e-5)
  np.testing.assert_allclose(gx_new, gx_ref, rtol=1e-5, atol=1e-4)


def test_phase_taps_by_hand():
  # k = 5, s = 2, "SAME": leading pad 3. Even outputs 2p take taps 1, 3 at
  # inputs p-1, p; odd outputs 2p+1 take taps 0, 2, 4 at p-1, p, p+1.
  taps, d_min = subpixel.phase_taps(5, 2)
  assert d_min == -1
  np.testing.assert_array_equal(taps, [[1, 3, 5], [0, 2, 4]])


@pytest.mark.parametrize("kwargs", [
    dict(padding="VALID"), dict(kernel_dilation=2),
    dict(transpose_kernel=True),
])
def test_refuses_settings_it_does_not_compute(kwargs):
  with pytest.raises(ValueError, match="supports"):
    subpixel.SubpixelConvTranspose(3, 4, (5, 5), 2, rngs=nnx.Rngs(0),
                                   **kwargs)


def test_refuses_other_ranks():
  with pytest.raises(ValueError, match="2-D"):
    subpixel.SubpixelConvTranspose(3, 4, (5,), 2, rngs=nnx.Rngs(0))
  layer = subpixel.SubpixelConvTranspose(3, 4, (5, 5), 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="B, H, W, C"):
    layer(jnp.zeros((5, 4, 3)))
