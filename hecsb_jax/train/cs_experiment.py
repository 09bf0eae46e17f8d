"""The compressed-sensing comparison: HECS-B (UAE) vs LASSO, CSGM-VAE, PCA.

For each dataset and each number of measurements m, every method measures
the same fixed subset of test images through a channel with the same noise
draw (y = M x + sigma * eps, one eps per image and m, shared by all
methods) and reconstructs them; the per-image squared l2 error is averaged:

    hecsb     learned W (||W||_F <= sqrt(m n)), MLP decoder trained by the
              variational information bound
    pca       W = sqrt(n) U_m^T (same norm bound), affine reconstruction
    lasso     random Gaussian A, l1 recovery in the pixel basis, lambda
              chosen on validation images
    csgm_vae  the same A and y, latent search through a VAE generator

Training is checkpointed under ``workdir`` so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
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
from hecsb_jax.train.trainer import FitConfig, fit

METHODS = ("hecsb", "lasso", "csgm_vae", "pca")
NUM_SHOWN = 8  # test images kept for the reconstruction figure


@dataclasses.dataclass
class DatasetRun:
  """What one dataset's comparison produced."""

  # method -> str(m) -> {"l2_per_image", "mse_per_pixel", ...}
  scores: dict[str, dict[str, dict[str, float]]]
  shown: np.ndarray  # [NUM_SHOWN, n] originals
  # method -> m -> [NUM_SHOWN, n] reconstructions
  reconstructions: dict[str, dict[int, np.ndarray]]
  num_eval_images: int


def _score(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
  err = np.square(np.asarray(x_hat, np.float64) - x).sum(-1)
  return {
      "l2_per_image": float(err.mean()),
      "mse_per_pixel": float(err.mean() / x.shape[-1]),
  }


def _measure(x, w, noise):
  return jnp.asarray(x) @ jnp.asarray(w).T + noise


def _new_uae(config, m, weight_decay, n):
  """A fresh UAE for n pixels and m measurements, and how to train it."""
  model = UncertaintyAutoencoder(
      n, m,
      noise_std=config.noise_std,
      hidden=tuple(config.uae.hidden),
      activation=config.uae.activation,
      likelihood=config.uae.likelihood,
      rngs=nnx.Rngs(config.seed + m),
  )
  fit_config = FitConfig(
      epochs=config.uae.epochs,
      batch_size=config.uae.batch_size,
      learning_rate=config.uae.learning_rate,
      weight_decay=weight_decay,
      seed=config.seed + m,
  )
  return model, fit_config


def _fit_uae(config, m, train_x, val_x, val_eps, workdir, progress, log,
             ds_name):
  """Trains one UAE per weight decay in the grid; keeps the best on val.

  The selection criterion is the experiment's own metric, the per-image
  squared l2 error, on the validation split through a fixed noise draw;
  the test images are never looked at.
  """
  best = None
  for wd in config.uae.weight_decay_grid:
    model, fit_config = _new_uae(config, m, wd, train_x.shape[1])
    fit(model, uae_loss, train_x, val_x, fit_config,
        workdir=os.path.join(workdir, f"uae_m{m}_wd{wd:g}"),
        project_fn=lambda mdl: mdl.project_(),
        decay_mask=decoder_kernels,
        desc=f"hecsb m={m} wd={wd:g}", progress=progress)
    y_val = _measure(val_x, model.encoder.w[...], val_eps)
    val_l2 = _score(val_x, np.asarray(model.reconstruct(y_val)))[
        "l2_per_image"]
    log(f"[{ds_name}] m={m:<3d} hecsb     weight decay {wd:g}: "
        f"val l2/image {val_l2:.3f}")
    if best is None or val_l2 < best[0]:
      best = (val_l2, wd, model)
  return best


def run_dataset(
    ds: ImageDataset,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DatasetRun:
  """Runs every method at every m on one dataset."""
  n = ds.train.images.shape[1]
  train_x = ds.train.images
  if config.train_limit:
    train_x = train_x[: config.train_limit]
  val_x = ds.val.images
  sigma = config.noise_std
  subset_rng = np.random.default_rng(config.seed)
  num_eval = min(config.eval_images, ds.test.images.shape[0])
  test_idx = np.sort(subset_rng.choice(ds.test.images.shape[0], num_eval,
                                       replace=False))
  x_test = ds.test.images[test_idx]
  x_lasso_val = val_x[: config.lasso.val_images]
  key = jax.random.key(config.seed)

  start = time.perf_counter()
  vae = csgm.train_vae(train_x, val_x, epochs=config.vae.epochs,
                       seed=config.seed, workdir=os.path.join(workdir, "vae"),
                       progress=progress)
  log(f"[{ds.name}] VAE trained in {time.perf_counter() - start:.0f} s")

  scores = {method: {} for method in METHODS}
  recons = {method: {} for method in METHODS}
  for m in config.measurements:
    m_key = jax.random.fold_in(key, m)
    eps = jax.random.normal(jax.random.fold_in(m_key, 1), (num_eval, m))
    eps_val = jax.random.normal(jax.random.fold_in(m_key, 2),
                                (x_lasso_val.shape[0], m))
    gauss = jax.random.normal(jax.random.fold_in(m_key, 3), (m, n))

    def record(method, x_hat, start, **extra):
      # np.asarray waits for the device: JAX dispatches asynchronously, so
      # the clock stops only once the reconstructions really exist.
      x_hat = np.asarray(x_hat)
      seconds = time.perf_counter() - start
      scores[method][str(m)] = dict(_score(x_test, x_hat),
                                    num_images=num_eval, seconds=seconds,
                                    **extra)
      recons[method][m] = x_hat[:NUM_SHOWN]
      log(f"[{ds.name}] m={m:<3d} {method:<9s} "
          f"l2/image {scores[method][str(m)]['l2_per_image']:8.3f}"
          f"  ({seconds:.0f} s)")

    t = time.perf_counter()
    val_eps = sigma * jax.random.normal(jax.random.fold_in(m_key, 5),
                                        (val_x.shape[0], m))
    val_l2, wd, uae = _fit_uae(config, m, train_x, val_x, val_eps, workdir,
                               progress, log, ds.name)
    y = _measure(x_test, uae.encoder.w[...], sigma * eps)
    record("hecsb", uae.reconstruct(y), t, weight_decay=float(wd),
           val_l2_per_image=float(val_l2))

    t = time.perf_counter()
    p = pca.fit_pca(train_x, m)
    y = _measure(x_test, pca.pca_measurement_matrix(p), sigma * eps)
    record("pca", pca.pca_reconstruct(p, y), t)

    t = time.perf_counter()
    y_val = _measure(x_lasso_val, gauss, sigma * eps_val)
    lam = lasso.select_lasso_lambda(gauss, y_val, x_lasso_val,
                                    tuple(config.lasso.lambda_grid))
    y = _measure(x_test, gauss, sigma * eps)
    record("lasso", lasso.lasso_recover(gauss, y, lam),
           t, **{"lambda": float(lam)})

    t = time.perf_counter()
    x_hat = csgm.csgm_recover(
        vae.decode, gauss, y, key=jax.random.fold_in(m_key, 4),
        num_restarts=config.csgm.num_restarts,
        num_steps=config.csgm.num_steps,
        learning_rate=config.csgm.learning_rate,
        z_reg=config.csgm.z_reg,
    )
    record("csgm_vae", x_hat, t)

  return DatasetRun(scores=scores, shown=x_test[:NUM_SHOWN],
                    reconstructions=recons, num_eval_images=num_eval)
