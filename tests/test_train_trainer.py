"""Tests of the generic training loop: learning, determinism, resumption."""

from flax import nnx
import jax
import numpy as np
import pytest

from hecsb_jax.models.uae import (
    UncertaintyAutoencoder, decoder_kernels, uae_loss,
)
from hecsb_jax.train.trainer import FitConfig, fit


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
