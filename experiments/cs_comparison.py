"""The compressed-sensing comparison: HECS-B (UAE) vs LASSO, CSGM-VAE, PCA.

For each dataset and each number of measurements m, every method measures
the test images through a channel with the same noise draw (y = M x +
sigma * eps, one eps per image and m, shared by all methods) and
reconstructs them; the per-image squared l2 error is averaged. HECS-B, PCA
and LASSO are scored on the whole test set; CSGM's latent search is too
slow for that on a CPU, so it is scored on a fixed random subset, and every
method's error on that same subset is reported beside it:

    hecsb     learned W (||W||_F <= sqrt(m n)), MLP decoder trained by the
              variational information bound
    pca       W = sqrt(n) U_m^T (same norm bound), affine reconstruction
    lasso     random Gaussian A, l1 recovery in the pixel basis, lambda
              chosen on validation images
    csgm_vae  the same A and y, latent search through a VAE generator

Training is checkpointed under ``workdir`` so an interrupted run resumes;
each checkpoint carries a fingerprint (model settings, training settings,
the data's content hash, `FORMAT`), and a checkpoint made by other settings
is refused rather than reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hecsb_jax.cs import csgm, lasso, pca
from hecsb_jax.data import ImageDataset
from hecsb_jax.models.uae import (
    UncertaintyAutoencoder, decoder_kernels, uae_loss,
)
from hecsb_jax.models.vae import VAE, vae_loss
from hecsb_jax.train.trainer import FitConfig, fit

METHODS = ("hecsb", "lasso", "csgm_vae", "pca")
SUBSET_ONLY = ("csgm_vae",)  # scored on the fixed test subset alone
NUM_SHOWN = 8  # test images kept for the reconstruction figure
# Part of every checkpoint's fingerprint: bump it when what the experiment
# trains from the same config changes, so older checkpoints are refused.
FORMAT = 2


@dataclasses.dataclass
class DatasetRun:
  """What one dataset's comparison produced."""

  # method -> str(m) -> {"l2_per_image", "mse_per_pixel", ...}
  scores: dict[str, dict[str, dict[str, float]]]
  shown: np.ndarray  # [NUM_SHOWN, n] originals
  # method -> m -> [NUM_SHOWN, n] reconstructions
  reconstructions: dict[str, dict[int, np.ndarray]]
  num_test_images: int
  num_subset_images: int
  epochs_trained: int  # by this call; 0 when every model was restored


def _score(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
  err = np.square(np.asarray(x_hat, np.float64) - x).sum(-1)
  return {
      "l2_per_image": float(err.mean()),
      "mse_per_pixel": float(err.mean() / x.shape[-1]),
  }


def _measure(x, w, noise):
  return jnp.asarray(x) @ jnp.asarray(w).T + noise


def data_fingerprint(ds: ImageDataset, train_x: np.ndarray) -> dict:
  """What identifies the training data: name, sizes, content hashes."""
  def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
  return {"dataset": ds.name, "train_examples": int(train_x.shape[0]),
          "train_sha256": digest(train_x),
          "val_examples": int(ds.val.images.shape[0]),
          "val_sha256": digest(ds.val.images)}


def _fit_config(section, weight_decay, seed) -> FitConfig:
  return FitConfig(
      epochs=section.epochs,
      batch_size=section.batch_size,
      learning_rate=section.learning_rate,
      schedule=section.schedule,
      weight_decay=weight_decay,
      seed=seed,
  )


def train_vae(train_x, val_x, config, workdir, data_id, progress) -> tuple:
  """Trains the CSGM generator, a 784-500-500-20 VAE; -> (vae, epochs run)."""
  model = VAE(np.shape(train_x)[1], rngs=nnx.Rngs(config.seed))
  result = fit(
      model, vae_loss, train_x, val_x,
      _fit_config(config.vae, 0.0, config.seed),
      workdir=workdir, desc="vae", progress=progress,
      fingerprint={"format": FORMAT, "model": "vae", "data": data_id},
  )
  return result.model, result.epochs_run


def _fit_uae(config, m, train_x, val_x, val_eps, workdir, progress, log,
             ds_name, data_id):
  """Trains one UAE per weight decay in the grid; keeps the best on val.

  The selection criterion is the experiment's own metric, the per-image
  squared l2 error, on the validation split through a fixed noise draw;
  the test images are never looked at.

  Returns:
    (val l2, weight decay, model, epochs trained by this call).
  """
  best, epochs_run = None, 0
  n = train_x.shape[1]
  for wd in config.uae.weight_decay_grid:
    model = UncertaintyAutoencoder(
        n, m, noise_std=config.noise_std, hidden=tuple(config.uae.hidden),
        activation=config.uae.activation, likelihood=config.uae.likelihood,
        rngs=nnx.Rngs(config.seed + m),
    )
    result = fit(
        model, uae_loss, train_x, val_x,
        _fit_config(config.uae, wd, config.seed + m),
        workdir=os.path.join(workdir, f"uae_m{m}_wd{wd:g}"),
        project_fn=lambda mdl: mdl.project_(),
        decay_mask=decoder_kernels,
        desc=f"hecsb m={m} wd={wd:g}", progress=progress,
        fingerprint={
            "format": FORMAT, "model": "uae", "m": m, "data": data_id,
            "noise_std": config.noise_std,
            "hidden": list(config.uae.hidden),
            "activation": config.uae.activation,
            "likelihood": config.uae.likelihood,
        },
    )
    epochs_run += result.epochs_run
    y_val = _measure(val_x, model.encoder.w[...], val_eps)
    val_l2 = _score(val_x, np.asarray(model.reconstruct(y_val)))[
        "l2_per_image"]
    log(f"[{ds_name}] m={m:<3d} hecsb     weight decay {wd:g}: "
        f"val l2/image {val_l2:.3f} (best epoch {result.best_epoch})")
    if best is None or val_l2 < best[0]:
      best = (val_l2, wd, model)
  return (*best, epochs_run)


def run_dataset(
    ds: ImageDataset,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DatasetRun:
  """Runs every method at every m on one dataset.

  ``scores[method][str(m)]`` holds ``l2_per_image`` and ``mse_per_pixel``
  over ``num_images`` test images (the whole test set, or the subset for
  the methods in `SUBSET_ONLY`; ``eval_set`` says which) and
  ``subset_l2_per_image`` over the fixed subset every method is scored on.
  """
  n = ds.train.images.shape[1]
  train_x = ds.train.images
  if config.train_limit:
    train_x = train_x[: config.train_limit]
  val_x = ds.val.images
  x_test = ds.test.images
  if config.test_limit:
    x_test = x_test[: config.test_limit]
  num_test = x_test.shape[0]
  sigma = config.noise_std
  subset_rng = np.random.default_rng(config.seed)
  num_subset = min(config.eval_images, num_test)
  subset = np.sort(subset_rng.choice(num_test, num_subset, replace=False))
  x_lasso_val = val_x[: config.lasso.val_images]
  key = jax.random.key(config.seed)
  data_id = data_fingerprint(ds, train_x)

  start = time.perf_counter()
  vae, epochs_trained = train_vae(train_x, val_x, config,
                                  os.path.join(workdir, "vae"), data_id,
                                  progress)
  log(f"[{ds.name}] VAE trained in {time.perf_counter() - start:.0f} s")

  scores = {method: {} for method in METHODS}
  recons = {method: {} for method in METHODS}
  for m in config.measurements:
    m_key = jax.random.fold_in(key, m)
    # One noise draw per test image and m, shared by every method.
    eps = sigma * jax.random.normal(jax.random.fold_in(m_key, 1),
                                    (num_test, m))
    eps_val = jax.random.normal(jax.random.fold_in(m_key, 2),
                                (x_lasso_val.shape[0], m))
    gauss = jax.random.normal(jax.random.fold_in(m_key, 3), (m, n))

    def record(method, x_hat, start, **extra):
      # np.asarray waits for the device: JAX dispatches asynchronously, so
      # the clock stops only once the reconstructions really exist.
      x_hat = np.asarray(x_hat)
      seconds = time.perf_counter() - start
      if method in SUBSET_ONLY:
        on_subset = x_hat
        result = dict(_score(x_test[subset], x_hat), num_images=num_subset,
                      eval_set="subset")
      else:
        on_subset = x_hat[subset]
        result = dict(_score(x_test, x_hat), num_images=num_test,
                      eval_set="full")
      result.update(
          subset_l2_per_image=_score(x_test[subset],
                                     on_subset)["l2_per_image"],
          subset_num_images=num_subset, seconds=seconds, **extra)
      scores[method][str(m)] = result
      recons[method][m] = on_subset[:NUM_SHOWN]
      log(f"[{ds.name}] m={m:<3d} {method:<9s} "
          f"l2/image {result['l2_per_image']:8.3f} ({result['eval_set']},"
          f" {result['num_images']} images; subset"
          f" {result['subset_l2_per_image']:.3f})  ({seconds:.0f} s)")

    t = time.perf_counter()
    val_eps = sigma * jax.random.normal(jax.random.fold_in(m_key, 5),
                                        (val_x.shape[0], m))
    val_l2, wd, uae, epochs = _fit_uae(config, m, train_x, val_x, val_eps,
                                       workdir, progress, log, ds.name,
                                       data_id)
    epochs_trained += epochs
    y = _measure(x_test, uae.encoder.w[...], eps)
    record("hecsb", uae.reconstruct(y), t, weight_decay=float(wd),
           val_l2_per_image=float(val_l2))

    t = time.perf_counter()
    p = pca.fit_pca(train_x, m)
    y = _measure(x_test, pca.pca_measurement_matrix(p), eps)
    record("pca", pca.pca_reconstruct(p, y), t)

    t = time.perf_counter()
    y_val = _measure(x_lasso_val, gauss, sigma * eps_val)
    lam = lasso.select_lasso_lambda(
        gauss, y_val, x_lasso_val,
        tuple(config.lasso.lambda_grid or lasso.DEFAULT_LAMBDA_GRID))
    y = _measure(x_test, gauss, eps)
    record("lasso", lasso.lasso_recover(gauss, y, lam),
           t, **{"lambda": float(lam)})

    t = time.perf_counter()
    x_hat = csgm.csgm_recover(
        vae.decode, gauss, y[subset], key=jax.random.fold_in(m_key, 4),
        num_restarts=config.csgm.num_restarts,
        num_steps=config.csgm.num_steps,
        learning_rate=config.csgm.learning_rate,
        z_reg=config.csgm.z_reg,
    )
    record("csgm_vae", x_hat, t)

  return DatasetRun(scores=scores, shown=x_test[subset][:NUM_SHOWN],
                    reconstructions=recons, num_test_images=num_test,
                    num_subset_images=num_subset,
                    epochs_trained=epochs_trained)
