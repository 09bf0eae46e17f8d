"""Config of the compressed-sensing experiment (HECS-B §4.1, design.md A).

Full run (both datasets, m in {2, 5, 10, 25, 50, 100}, all four methods):

    python -m experiments.mnist_cs --data-dir ../shared/data

Quick run (minutes on 2 cores, every method still trained for real):

    python -m experiments.mnist_cs --data-dir ../shared/data --quick

Expected runtime and results: see the table in README.md, made by the full
run on a 2-core CPU. Configs import no JAX: reading one is cheap.
"""

import ml_collections

MEASUREMENTS = (2, 5, 10, 25, 50, 100)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the experiment config; ``arg="quick"`` gives the smoke config."""
  c = ml_collections.ConfigDict()
  c.datasets = ("mnist", "omniglot")
  c.measurements = MEASUREMENTS
  c.noise_std = 0.1  # sigma of the measurement channel, every method
  c.seed = 0
  # HECS-B, PCA and LASSO are scored on the whole test set. CSGM's latent
  # search is too slow for that on a CPU: it is scored on a fixed random
  # subset of this many test images, and so is every other method beside it.
  c.eval_images = 300
  c.train_limit = 0  # 0: the whole training split
  c.test_limit = 0  # 0: the whole test split

  c.uae = ml_collections.ConfigDict(dict(
      hidden=(600, 600),
      activation="leaky_relu",
      likelihood="bernoulli",
      # Chosen by validation l2 on MNIST at m = 50: 100 epochs cosine from
      # 1e-3 gave 2.86, from 3e-3 2.41 (the earlier 40 epochs at a constant
      # 1e-3 were worse than both); a Gaussian likelihood instead, 3.26.
      epochs=80,
      batch_size=100,
      learning_rate=3e-3,
      schedule="cosine",  # to zero over all epochs
      # AdamW decay of the decoder's kernels (W never decays): one model per
      # value, the lowest validation l2 is kept, per dataset and m. Without
      # decay the decoder memorizes Omniglot's 17k training characters
      # (m = 25: train l2 11.7 vs val 19.1) and only ties PCA; on MNIST's
      # 50k images decay costs accuracy at large m. optax scales decay by
      # the learning rate: 0.5 at this schedule's mean rate (1.5e-3) decays
      # about as fast as the 1.0 at 1e-3 validation chose before.
      weight_decay_grid=(0.0, 0.5),
  ))
  c.vae = ml_collections.ConfigDict(dict(
      epochs=40, batch_size=100, learning_rate=1e-3, schedule="constant",
  ))
  c.csgm = ml_collections.ConfigDict(dict(
      num_restarts=10, num_steps=1000, learning_rate=0.01, z_reg=0.1,
  ))
  c.lasso = ml_collections.ConfigDict(dict(
      # lambda in scikit-learn's convention, picked per m on validation
      # images (never on test images). None: lasso.DEFAULT_LAMBDA_GRID,
      # which reaches past lam_max: for small m, validation picks the
      # all-zero answer over any l1 recovery.
      lambda_grid=ml_collections.FieldReference(None, field_type=tuple),
      val_images=100,
  ))

  if arg == "quick":
    c.train_limit = 5000
    c.test_limit = 1000
    c.eval_images = 100
    c.uae.epochs = 3
    c.vae.epochs = 3
    c.csgm.num_restarts = 2
    c.csgm.num_steps = 200
    c.lasso.lambda_grid = (1e-3, 1e-2, 0.1)
    c.lasso.val_images = 50
  elif arg not in (None, "", "full"):
    raise ValueError(f"unknown config argument {arg!r}: use 'quick' or none")
  return c
