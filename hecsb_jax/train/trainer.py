"""A small, generic, resumable training loop for nnx models on in-memory data.

Used for every model trained on whole-array datasets (the uncertainty
autoencoder, the CSGM VAE). One epoch is one jitted call: the batches of an
epoch are a `lax.scan` over a permutation drawn inside the call, so Python
dispatch costs nothing per step and the data stay on the device.

Determinism and resumption: the randomness of epoch ``e`` comes only from
``fold_in(key(seed), e)``, so a run that is interrupted and resumed from its
last checkpoint ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from hecsb_jax.train.checkpoint import TrainCheckpointer

# loss_fn(model, x [B, D] float32, rng) -> (scalar loss, {name: scalar}).
LossFn = Callable[[nnx.Module, jax.Array, jax.Array], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Optimization settings of `fit`.

  Attributes:
    epochs: number of passes over the training set.
    batch_size: examples per step; the last incomplete batch of an epoch is
      dropped (a fresh permutation each epoch sees every example over time).
    learning_rate: Adam step size.
    weight_decay: decoupled weight decay (AdamW, Loshchilov & Hutter 2019)
      per unit learning rate; 0 is plain Adam. Which parameters decay is
      `fit`'s ``decay_mask``.
    seed: everything random in training derives from this.
    eval_chunk: validation examples per jitted evaluation call.
  """

  epochs: int
  batch_size: int = 100
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  seed: int = 0
  eval_chunk: int = 10_000


class FitResult(NamedTuple):
  model: nnx.Module  # holds the parameters of the best validation epoch
  best_val_loss: float
  best_epoch: int  # 1-based; 0 means "no epoch run"
  history: list[dict[str, float]]


def _kernels(params: nnx.State) -> Any:
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    train_x: np.ndarray,
    val_x: np.ndarray,
    config: FitConfig,
    *,
    workdir: str | None = None,
    project_fn: Callable[[nnx.Module], None] | None = None,
    decay_mask: Callable[[nnx.State], Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> FitResult:
  """Trains ``model`` with Adam; keeps the best validation parameters.

  Args:
    model: an nnx module; its `nnx.Param`s are trained. It is updated in
      place to the best-validation parameters and also returned.
    loss_fn: ``(model, x, rng) -> (loss, metrics)``; the same function
      scores validation data, with one fixed rng for every epoch so that
      validation losses are comparable across epochs.
    train_x: [N, D] training examples.
    val_x: [N_val, D] validation examples.
    config: optimization settings.
    workdir: if given, a checkpoint is written there after every epoch and
      training resumes from the latest one found there.
    project_fn: called on the model after every optimizer step, inside the
      jitted step, to project parameters back onto a constraint set
      (projected gradient descent). It mutates the model in place.
    decay_mask: ``params -> pytree of bools``, the parameters that
      ``config.weight_decay`` shrinks; by default every parameter with two or
      more dimensions (kernels, not biases or scales).
    on_epoch_end: called with ``(epoch, record)`` after each epoch is
      checkpointed (logging, early stopping by raising).
    desc: progress-bar label.
    progress: show a progress bar with loss and speed.

  Returns:
    A `FitResult`.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if config.weight_decay:
    tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay,
                     mask=decay_mask or _kernels)
  else:
    tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)
  train_x = jnp.asarray(train_x, jnp.float32)
  val_x = jnp.asarray(val_x, jnp.float32)
  num_steps = train_x.shape[0] // config.batch_size
  if num_steps == 0:
    raise ValueError(
        f"training set of {train_x.shape[0]} examples is smaller than one"
        f" batch of {config.batch_size}"
    )
  key = jax.random.key(config.seed)
  # Epochs are numbered from 1, so fold-in 0 is free for validation noise.
  val_rng = jax.random.fold_in(key, 0)

  train_epoch = make_train_epoch(
      graphdef, rest, loss_fn, tx, key, num_steps, config.batch_size,
      project_fn,
  )

  @jax.jit
  def eval_loss(params, x):
    return loss_fn(nnx.merge(graphdef, params, rest), x, val_rng)[0]

  def validate(params) -> float:
    total = 0.0
    for start in range(0, val_x.shape[0], config.eval_chunk):
      chunk = val_x[start : start + config.eval_chunk]
      total += float(eval_loss(params, chunk)) * chunk.shape[0]
    return total / val_x.shape[0]

  state = {"params": params, "opt_state": opt_state, "best_params": params}
  meta = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0,
          "history": []}
  checkpointer = TrainCheckpointer(workdir) if workdir else None
  if checkpointer is not None and checkpointer.latest_step() is not None:
    abstract = jax.eval_shape(lambda: state)
    state, meta = checkpointer.restore(checkpointer.latest_step(), abstract)

  bar = tqdm.tqdm(
      total=config.epochs, initial=meta["epoch"], desc=desc,
      disable=not progress, unit="epoch", dynamic_ncols=True,
  )
  try:
    for epoch in range(meta["epoch"] + 1, config.epochs + 1):
      start = time.perf_counter()
      params, opt_state, metrics = train_epoch(
          state["params"], state["opt_state"], train_x, epoch
      )
      metrics = {k: float(v) for k, v in metrics.items()}
      seconds = time.perf_counter() - start
      val_loss = validate(params)
      record = dict(
          epoch=epoch,
          train_loss=metrics.pop("loss"),
          val_loss=val_loss,
          seconds=seconds,
          examples_per_s=num_steps * config.batch_size / seconds,
          **metrics,
      )
      best_params = state["best_params"]
      if val_loss < meta["best_val_loss"]:
        best_params = params
        meta["best_val_loss"], meta["best_epoch"] = val_loss, epoch
      state = {"params": params, "opt_state": opt_state,
               "best_params": best_params}
      meta["epoch"] = epoch
      meta["history"].append(record)
      if checkpointer is not None:
        checkpointer.save(epoch, state, meta)
      bar.update(1)
      bar.set_postfix(
          loss=f"{record['train_loss']:.4g}", val=f"{val_loss:.4g}",
          ex_s=f"{record['examples_per_s']:.0f}",
      )
      if on_epoch_end is not None:
        on_epoch_end(epoch, record)
  finally:
    bar.close()
    if checkpointer is not None:
      checkpointer.close()

  nnx.update(model, state["best_params"])
  return FitResult(
      model=model,
      best_val_loss=float(meta["best_val_loss"]),
      best_epoch=int(meta["best_epoch"]),
      history=list(meta["history"]),
  )


def make_train_epoch(
    graphdef: nnx.GraphDef,
    rest: nnx.State,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    key: jax.Array,
    num_steps: int,
    batch_size: int,
    project_fn: Callable[[nnx.Module], None] | None = None,
) -> Callable:
  """Builds the jitted epoch: ``(params, opt_state, data, epoch) -> ...``.

  The epoch draws its permutation and per-step noise keys from
  ``fold_in(key, epoch)`` and runs ``num_steps`` optimizer steps in one
  `lax.scan`. Returns ``(params, opt_state, mean metrics)``, the metrics
  including ``loss``.
  """

  def loss_on(params, x, rng):
    return loss_fn(nnx.merge(graphdef, params, rest), x, rng)

  @jax.jit
  def train_epoch(params, opt_state, data, epoch):
    epoch_key = jax.random.fold_in(key, epoch)
    perm = jax.random.permutation(jax.random.fold_in(epoch_key, 0), len(data))
    batches = perm[: num_steps * batch_size].reshape(num_steps, batch_size)

    def step(carry, i):
      params, opt_state = carry
      rng = jax.random.fold_in(epoch_key, i + 1)
      (loss, metrics), grads = jax.value_and_grad(loss_on, has_aux=True)(
          params, data[batches[i]], rng
      )
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      if project_fn is not None:
        m = nnx.merge(graphdef, params, rest)
        project_fn(m)
        params = nnx.state(m, nnx.Param)
      return (params, opt_state), dict(metrics, loss=loss)

    (params, opt_state), metrics = jax.lax.scan(
        step, (params, opt_state), jnp.arange(num_steps)
    )
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  return train_epoch
