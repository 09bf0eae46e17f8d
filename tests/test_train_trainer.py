"""Tests of the general trainer: learning, determinism, resumption,
fingerprints, schedules, streamed data, frozen subsets, BatchNorm state, and
the data-parallel step."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.models.uae import (
    UncertaintyAutoencoder, decoder_kernels, uae_loss,
)
from hecsb_jax.train import step as step_lib
from hecsb_jax.train.checkpoint import CheckpointMismatchError
from hecsb_jax.train.trainer import FitConfig, fit, make_optimizer


def _data(n, seed=0):
  # Low-dimensional structured signals: a UAE can learn them quickly.
  rng = np.random.default_rng(seed)
  basis = rng.uniform(size=(4, 64)).astype(np.float32)
  coeff = rng.dirichlet(np.ones(4), size=n).astype(np.float32)
  return coeff @ basis


def _model(seed=0):
  # Gaussian likelihood: its loss goes to ~0 on learnable data, unlike the
  # Bernoulli one whose floor on grey pixels hides progress.
  return UncertaintyAutoencoder(
      64, 4, hidden=(32, 32), likelihood="gaussian", rngs=nnx.Rngs(seed)
  )


def _params(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def _project(m):
  m.project_()


def test_training_lowers_the_loss():
  x = _data(600)
  cfg = FitConfig(epochs=5, batch_size=50, learning_rate=3e-3)
  result = fit(_model(), uae_loss, x[:500], x[500:], cfg,
               project_fn=_project, progress=False)
  losses = [h["val_loss"] for h in result.history]
  assert losses[-1] < 0.5 * losses[0]
  assert result.best_val_loss == min(losses)


def test_same_seed_gives_identical_parameters():
  x = _data(300)
  cfg = FitConfig(epochs=2, batch_size=50)
  a = fit(_model(), uae_loss, x[:250], x[250:], cfg, progress=False)
  b = fit(_model(), uae_loss, x[:250], x[250:], cfg, progress=False)
  jax.tree.map(np.testing.assert_array_equal, _params(a.model),
               _params(b.model))


def test_lr_multipliers_scale_each_parameters_step():
  # One Adam step (50 examples, batch 50): its update does not depend on
  # the parameters, so a multiplier of 2 doubles the encoder's change
  # exactly, and 0 freezes the decoder.
  x = _data(100)
  cfg = FitConfig(epochs=1, batch_size=50, learning_rate=1e-2)

  def multipliers(encoder, decoder):
    def fn(params):
      return jax.tree_util.tree_map_with_path(
          lambda path, _: encoder if "encoder" in jax.tree_util.keystr(path)
          else decoder, params)
    return fn

  before = _params(_model())
  plain = _params(fit(_model(), uae_loss, x[:50], x[50:], cfg,
                      lr_multipliers=multipliers(1.0, 1.0),
                      progress=False).model)
  scaled = _params(fit(_model(), uae_loss, x[:50], x[50:], cfg,
                       lr_multipliers=multipliers(2.0, 0.0),
                       progress=False).model)
  step_plain = plain["encoder"]["w"] - before["encoder"]["w"]
  assert np.abs(step_plain).max() > 1e-3
  np.testing.assert_allclose(scaled["encoder"]["w"] - before["encoder"]["w"],
                             2.0 * step_plain, rtol=1e-4, atol=1e-7)
  jax.tree.map(np.testing.assert_array_equal, scaled["decoder"],
               before["decoder"])


def test_weight_decay_shrinks_only_the_masked_parameters():
  # A loss with zero gradient isolates the decay: each step multiplies a
  # decayed parameter by exactly (1 - lr * wd) and leaves the rest alone.
  def flat_loss(model, x, rng):
    loss, metrics = uae_loss(model, x, rng)
    return 0.0 * loss, metrics

  x = _data(300)
  cfg = FitConfig(epochs=1, batch_size=50, learning_rate=1e-2,
                  weight_decay=2.0)
  before = _params(_model())
  after = _params(fit(_model(), flat_loss, x[:250], x[250:], cfg,
                      decay_mask=decoder_kernels, progress=False).model)
  shrink = (1 - 1e-2 * 2.0) ** 5  # 250 / 50 steps
  np.testing.assert_array_equal(after["encoder"]["w"], before["encoder"]["w"])
  for i, layer in enumerate(before["decoder"]["layers"].values()):
    got = after["decoder"]["layers"][i]
    np.testing.assert_allclose(got["kernel"], shrink * layer["kernel"],
                               rtol=1e-5)
    np.testing.assert_array_equal(got["bias"], layer["bias"])


class _Interrupt(Exception):
  pass


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
  x = _data(300)
  cfg = FitConfig(epochs=4, batch_size=50, seed=3)
  full = fit(_model(), uae_loss, x[:250], x[250:], cfg, progress=False)

  def crash_after_two(epoch, record):
    if epoch == 2:
      raise _Interrupt()

  workdir = str(tmp_path / "ckpt")
  with pytest.raises(_Interrupt):
    fit(_model(), uae_loss, x[:250], x[250:], cfg, workdir=workdir,
        on_epoch_end=crash_after_two, progress=False)
  # A fresh process would rebuild the model from scratch: so do we.
  resumed = fit(_model(seed=99), uae_loss, x[:250], x[250:], cfg,
                workdir=workdir, progress=False)
  assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
  assert resumed.best_epoch == full.best_epoch
  jax.tree.map(np.testing.assert_array_equal, _params(resumed.model),
               _params(full.model))


def test_finished_run_is_not_trained_again(tmp_path):
  x = _data(200)
  cfg = FitConfig(epochs=2, batch_size=50)
  workdir = str(tmp_path / "ckpt")
  first = fit(_model(), uae_loss, x[:150], x[150:], cfg, workdir=workdir,
              progress=False)
  calls = []
  again = fit(_model(seed=7), uae_loss, x[:150], x[150:], cfg,
              workdir=workdir, progress=False,
              on_epoch_end=lambda e, r: calls.append(e))
  assert calls == []
  jax.tree.map(np.testing.assert_array_equal, _params(first.model),
               _params(again.model))


def test_batch_larger_than_training_set_is_an_error():
  x = _data(40)
  with pytest.raises(ValueError, match="smaller than one batch"):
    fit(_model(), uae_loss, x[:30], x[30:], FitConfig(epochs=1),
        progress=False)


# ------------------------------------------------------------ fingerprints


def test_changed_setting_is_refused_and_names_the_field(tmp_path):
  x = _data(200)
  workdir = str(tmp_path / "ckpt")
  fit(_model(), uae_loss, x[:150], x[150:], FitConfig(epochs=1, batch_size=50),
      workdir=workdir, fingerprint={"data": "a"}, progress=False)
  with pytest.raises(CheckpointMismatchError, match="epochs: 1 .* 2 now"):
    fit(_model(), uae_loss, x[:150], x[150:],
        FitConfig(epochs=2, batch_size=50), workdir=workdir,
        fingerprint={"data": "a"}, progress=False)
  with pytest.raises(CheckpointMismatchError) as e:
    fit(_model(), uae_loss, x[:150], x[150:],
        FitConfig(epochs=1, batch_size=50), workdir=workdir,
        fingerprint={"data": "b"}, progress=False)
  assert e.value.differences == [("run.data", "a", "b")]
  assert workdir in str(e.value)


def test_other_architecture_is_refused(tmp_path):
  x = _data(200)
  workdir = str(tmp_path / "ckpt")
  cfg = FitConfig(epochs=1, batch_size=50)
  fit(_model(), uae_loss, x[:150], x[150:], cfg, workdir=workdir,
      progress=False)
  wider = UncertaintyAutoencoder(64, 4, hidden=(48, 32), likelihood="gaussian",
                                 rngs=nnx.Rngs(0))
  with pytest.raises(CheckpointMismatchError, match="params"):
    fit(wider, uae_loss, x[:150], x[150:], cfg, workdir=workdir,
        progress=False)


def test_rerun_of_a_finished_run_trains_no_step(tmp_path):
  x = _data(200)
  cfg = FitConfig(epochs=2, batch_size=50)
  workdir = tmp_path / "ckpt"
  first = fit(_model(), uae_loss, x[:150], x[150:], cfg,
              workdir=str(workdir), progress=False)
  assert first.epochs_run == 2
  files = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
  again = fit(_model(seed=5), uae_loss, x[:150], x[150:], cfg,
              workdir=str(workdir), progress=False)
  assert again.epochs_run == 0
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == files


# ------------------------------------------------------ the general step


def test_schedules():
  cfg = FitConfig(epochs=4, learning_rate=1.0, schedule="cosine",
                  warmup_epochs=1, final_lr_fraction=0.1)
  tx = make_optimizer(cfg, steps_per_epoch=10)
  # Adam's first update on a unit gradient is -lr (bias-corrected).
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  lrs = []
  for _ in range(40):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    lrs.append(-float(updates["w"]))
  assert lrs[0] == pytest.approx(0.0, abs=1e-6)
  assert lrs[10] == pytest.approx(1.0, rel=1e-3)  # the peak after warmup
  assert lrs[-1] == pytest.approx(0.1, rel=0.05)
  with pytest.raises(ValueError, match="schedule"):
    FitConfig(epochs=1, schedule="linear")


def test_streamed_batches_match_the_in_memory_epoch():
  # The same batches, in the same order, with the same step keys: the
  # streamed loop and the scanned epoch end with the same parameters.
  x = _data(300)[:250]
  cfg = FitConfig(epochs=2, batch_size=50, seed=4)
  in_memory = fit(_model(), uae_loss, x, None, cfg, progress=False)

  def batches(epoch):
    key = jax.random.fold_in(jax.random.key(cfg.seed), epoch)
    order = np.asarray(step_lib.epoch_permutation(key, len(x)))
    for i in range(len(x) // 50):
      yield x[order[i * 50:(i + 1) * 50]]

  streamed = fit(_model(), uae_loss, batches, None, cfg, steps_per_epoch=5,
                 progress=False)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               _params(in_memory.model), _params(streamed.model))


class _BatchNormNet(nnx.Module):
  """A frozen encoder, a trained head and BatchNorm statistics."""

  def __init__(self, rngs):
    self.encoder = nnx.Linear(8, 8, rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs)
    self.head = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x):
    return self.head(self.norm(self.encoder(x)))


def _regression_loss(model, batch, rng):
  del rng
  err = model(batch["x"])[:, 0] - batch["y"]
  return jnp.mean(err * err), {}


def test_subset_training_with_batchnorm_state():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 8)).astype(np.float32) * 3 + 1
  data = {"x": x, "y": x.sum(-1)}
  model = _BatchNormNet(nnx.Rngs(0))
  before = jax.tree.map(np.asarray, nnx.state(model))
  only_head = nnx.All(nnx.Param, nnx.PathContains("head"))
  fit(model, _regression_loss, data, None,
      FitConfig(epochs=2, batch_size=50, learning_rate=1e-2),
      trainable=only_head, progress=False)
  after = jax.tree.map(np.asarray, nnx.state(model))
  np.testing.assert_array_equal(after["encoder"]["kernel"],
                                before["encoder"]["kernel"])
  np.testing.assert_array_equal(after["norm"]["scale"],
                                before["norm"]["scale"])
  assert not np.allclose(after["head"]["kernel"], before["head"]["kernel"])
  # BatchNorm statistics moved towards the data's (mean ~ encoder(1)).
  assert not np.allclose(after["norm"]["mean"], before["norm"]["mean"])
  assert model.norm.use_running_average  # fit ends in eval mode


_SHARDED_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, numpy as np
from flax import nnx
sys.path.insert(0, sys.argv[1])
from test_train_trainer import _data, _model, _params
from hecsb_jax.models.uae import uae_loss
from hecsb_jax.train import step as step_lib
from hecsb_jax.train.trainer import FitConfig, fit
assert jax.device_count() == 8, jax.devices()
x = _data(400)
cfg = FitConfig(epochs=2, batch_size=64, seed=1)
one = fit(_model(), uae_loss, x[:320], x[320:], cfg, progress=False)
mesh = step_lib.data_mesh()
many = fit(_model(), uae_loss, x[:320], x[320:], cfg, mesh=mesh,
           progress=False)
def batches(epoch):
  key = jax.random.fold_in(jax.random.key(cfg.seed), epoch)
  order = np.asarray(step_lib.epoch_permutation(key, 320))
  for i in range(5):
    yield x[order[i * 64:(i + 1) * 64]]
streamed = fit(_model(), uae_loss, batches, x[320:], cfg, mesh=mesh,
               steps_per_epoch=5, progress=False)
for other in (many, streamed):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               _params(one.model), _params(other.model))
  assert abs(one.best_val_loss - other.best_val_loss) < 1e-4
print("SHARDED_OK")
"""


def test_sharded_step_equals_single_device(tmp_path):
  # XLA_FLAGS must be set before JAX starts: a fresh interpreter.
  import subprocess, sys, os  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run(
      [sys.executable, "-c", _SHARDED_SCRIPT, os.path.dirname(__file__)],
      capture_output=True, text=True, env=env, timeout=300,
  )
  assert "SHARDED_OK" in out.stdout, out.stderr[-3000:]
