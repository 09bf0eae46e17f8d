"""The distillation losses against hand computations."""

import numpy as np
import pytest

from hecsb_jax.models import distill_losses as dl


def _log_softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("alpha,temperature", [(0.5, 1.0), (0.2, 3.0)])
def test_knowledge_distillation_matches_a_hand_computation(alpha,
                                                           temperature):
  student = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -2.0, 0.0]],
                     np.float32)
  teacher = np.array([[1.5, 1.0, -0.5], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0]],
                     np.float32)
  labels = np.array([0, 2, -1], np.int32)  # the last image is unlabelled
  loss, metrics = dl.knowledge_distillation(student, teacher, labels, alpha,
                                            temperature)
  log_p = _log_softmax(student.astype(np.float64))
  ce = -(log_p[0, 0] + log_p[1, 2]) / 2  # labelled images only
  log_t = _log_softmax(teacher / temperature)
  log_s = _log_softmax(student / temperature)
  kl = np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=-1))
  expected = alpha * ce + (1 - alpha) * temperature**2 * kl
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["ce"], ce, rtol=1e-5)
  np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5)
  # argmax: image 0 -> 0 (right), image 1 -> 2 (right).
  assert float(metrics["top1"]) == 1.0


def test_knowledge_distillation_without_labels_is_pure_kd():
  student = np.array([[0.0, 1.0]], np.float32)
  teacher = np.array([[1.0, 0.0]], np.float32)
  loss, metrics = dl.knowledge_distillation(
      student, teacher, np.array([-1], np.int32), 0.5, 1.0)
  assert float(metrics["ce"]) == 0.0 and float(metrics["top1"]) == 0.0
  np.testing.assert_allclose(loss, 0.5 * metrics["kl"], rtol=1e-6)
  assert float(metrics["kl"]) > 0


def test_distortion_rate_is_mse_plus_beta_bits():
  decoded = np.zeros((2, 2, 2, 3), np.float32)
  target = np.ones((2, 2, 2, 3), np.float32)
  target[0] = 3.0
  bits = np.array([100.0, 300.0], np.float32)
  loss, metrics = dl.distortion_rate(decoded, target, bits, beta=0.01)
  mse = (9.0 + 1.0) / 2
  np.testing.assert_allclose(metrics["mse"], mse)
  np.testing.assert_allclose(metrics["bits_per_image"], 200.0)
  np.testing.assert_allclose(loss, mse + 0.01 * 200.0)


def test_entropy_model_lr_speeds_up_the_prior_only():
  from flax import nnx
  import jax

  from hecsb_jax.models import hecsb_bottleneck as hb

  rngs = nnx.Rngs(0)
  bottleneck = hb.HecsbBottleneck(
      hb.ShallowAcquisition((8,), rngs=rngs), 8, 4, 6, decoder_width=8,
      rngs=rngs)
  params = nnx.state(bottleneck, nnx.Param)
  multipliers = dl.entropy_model_lr(10.0)(params)
  flat = jax.tree_util.tree_flatten_with_path(multipliers)[0]
  assert len(flat) == len(jax.tree.leaves(params))
  fast = {jax.tree_util.keystr(p) for p, m in flat if m == 10.0}
  assert fast and all("['entropy']['prior']" in p for p in fast)
  assert all(m == 1.0 for p, m in flat
             if jax.tree_util.keystr(p) not in fast)
  assert len(fast) == len(jax.tree.leaves(
      nnx.state(bottleneck.entropy, nnx.Param)))
