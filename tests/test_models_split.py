"""SplitModel and the distillation stages on a toy backbone: the plain cut
is exact, the coded path equals the float path, stage 1 lowers its loss
under `fit` with the teacher frozen, stage 2 trains only the server side."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.models import distill_losses as dl
from hecsb_jax.models import hecsb_bottleneck as hb
from hecsb_jax.models.split import SplitModel
from hecsb_jax.train.trainer import FitConfig, fit

M = 4


class Toy(nnx.Module):
  """Backbone with the `features`/`tail` API: "a" (stride 2, 8 channels),
  "b" (stride 4, 16 channels), then pool and a 10-way classifier."""

  POINTS = ("a", "b")

  def __init__(self, rngs):
    self.conv_a = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
    self.bn_a = nnx.BatchNorm(8, rngs=rngs)
    self.conv_b = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
    self.bn_b = nnx.BatchNorm(16, rngs=rngs)
    self.fc = nnx.Linear(16, 10, rngs=rngs)

  def _layers(self):
    return [lambda x: jax.nn.relu(self.bn_a(self.conv_a(x))),
            lambda x: jax.nn.relu(self.bn_b(self.conv_b(x)))]

  def features(self, x, until):
    for layer in self._layers()[: self.POINTS.index(until) + 1]:
      x = layer(x)
    return x

  def tail(self, h, after):
    for layer in self._layers()[self.POINTS.index(after) + 1:]:
      h = layer(h)
    return self.fc(jnp.mean(h, axis=(1, 2)))

  def __call__(self, x):
    return self.tail(self.features(x, "b"), "b")


def _teacher():
  teacher = Toy(nnx.Rngs(0))
  # Non-trivial stored statistics, so train/eval BatchNorm modes differ.
  teacher.bn_b.mean[...] = jnp.full((16,), 0.2)
  teacher.bn_b.var[...] = jnp.full((16,), 1.5)
  teacher.eval()
  return teacher


def _images(n, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 32, 32, 3))


def _pair(acquisition="prefix"):
  teacher = _teacher()
  if acquisition == "prefix":
    acq = hb.TeacherPrefix(nnx.clone(teacher), "b")
  else:
    acq = hb.ShallowAcquisition((8, 16), rngs=nnx.Rngs(2))
  bottleneck = hb.HecsbBottleneck(acq, 16, M, 16, decoder_width=16,
                                  rngs=nnx.Rngs(1))
  student = SplitModel(nnx.clone(teacher), "b", bottleneck)
  return dl.TeacherStudent(teacher, student)


def _state(module, *path):
  for p in path:
    module = getattr(module, p)
  return jax.tree.map(np.asarray, nnx.state(module, nnx.Param))


@pytest.mark.parametrize("split", Toy.POINTS)
def test_plain_cut_head_then_tail_is_the_whole_network(split):
  backbone = _teacher()
  model = SplitModel(backbone, split)
  x = _images(2)
  h, aux = model.head(x)
  assert aux == {}
  np.testing.assert_array_equal(model.tail(h), backbone(x))
  logits, _ = model(x)
  np.testing.assert_array_equal(logits, backbone(x))
  with pytest.raises(ValueError, match="needs a bottleneck"):
    model.edge_symbols(x)


def test_coded_path_equals_the_rounded_forward_pass():
  pair = _pair("shallow")
  student = pair.student
  student.eval()
  x = _images(2)
  logits, aux = student(x)
  assert logits.shape == (2, 10) and aux["bits"].shape == (2,)
  symbols = student.edge_symbols(x)
  assert symbols.shape == (2, 8, 8, M) and symbols.dtype == jnp.int32
  np.testing.assert_allclose(student.logits_from_symbols(symbols), logits,
                             rtol=1e-5, atol=1e-6)


def test_stage1_loss_falls_with_the_teacher_frozen():
  pair = _pair("prefix")
  data = {"image": np.asarray(_images(16, seed=3)),
          "label": np.arange(16, dtype=np.int32) % 10}
  batch = jax.tree.map(lambda a: a[:4], data)
  rng = jax.random.key(5)
  # Feeding the teacher's features to a frozen teacher prefix changes
  # nothing but the work done.
  pair.train()
  a, _ = dl.make_stage1_loss(1e-4)(pair, batch, rng)
  b, _ = dl.make_stage1_loss(1e-4, reuse_teacher_features=True)(
      pair, batch, rng)
  np.testing.assert_allclose(a, b, rtol=1e-6)

  pair.eval()
  initial, _ = dl.make_stage1_loss(1e-4)(pair, data, rng)
  teacher = _state(pair, "teacher")
  prefix = _state(pair.student.bottleneck, "acquisition")
  config = FitConfig(epochs=4, batch_size=8, learning_rate=1e-2)
  result = fit(pair, dl.make_stage1_loss(1e-4, reuse_teacher_features=True),
               data, data, config,
               trainable=dl.stage1_trainable(train_acquisition=False),
               project_fn=dl.project, progress=False)
  losses = [r["val_loss"] for r in result.history]
  assert losses[-1] < losses[0] and losses[-1] < 0.8 * float(initial), (
      float(initial), losses)
  assert all(r["val_bits_per_image"] > 0 for r in result.history)
  jax.tree.map(np.testing.assert_array_equal, teacher,
               _state(result.model, "teacher"))
  jax.tree.map(np.testing.assert_array_equal, prefix,
               _state(result.model.student.bottleneck, "acquisition"))
  meas = result.model.student.bottleneck.measurement
  assert float(jnp.sqrt(jnp.sum(meas.kernel[...] ** 2))) <= (
      meas.bound * (1 + 1e-5))


def test_stage2_trains_only_the_decoder_and_tail():
  pair = _pair("shallow")
  data = {"image": np.asarray(_images(8, seed=4)),
          "label": np.array([0, 1, 2, -1, 4, 5, -1, 7], np.int32)}
  loss_fn = dl.make_stage2_loss(alpha=0.3, temperature=2.0)
  pair.train()
  loss, metrics = loss_fn(pair, data, jax.random.key(0))
  # Stage 2 rounds even in training mode by default.
  logits, _ = pair.student(data["image"], training=False)
  expected, _ = dl.knowledge_distillation(
      logits, pair.teacher_logits(data["image"]), data["label"], 0.3, 2.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert metrics["bits_per_image"] > 0

  bottleneck = pair.student.bottleneck
  frozen = {k: _state(bottleneck, k)
            for k in ("acquisition", "measurement", "entropy")}
  decoder = _state(bottleneck, "decoder")
  fc = _state(pair.student.backbone, "fc")
  result = fit(pair, loss_fn, data, None,
               FitConfig(epochs=1, batch_size=8, learning_rate=1e-2),
               trainable=dl.stage2_trainable(), progress=False)
  bottleneck = result.model.student.bottleneck
  for k, before in frozen.items():
    jax.tree.map(np.testing.assert_array_equal, before,
                 _state(bottleneck, k))
  changed = lambda a, b: any(
      not np.array_equal(x, y)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(decoder, _state(bottleneck, "decoder"))
  assert changed(fc, _state(result.model.student.backbone, "fc"))
