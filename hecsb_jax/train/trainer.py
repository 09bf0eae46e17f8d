"""A resumable training loop for nnx models: `fit`.

`fit` drives the step of `hecsb_jax.train.step` over epochs and adds what a
run needs around it: an optimizer with a learning-rate schedule and weight
decay, validation after every epoch with the best parameters kept,
checkpoints with a fingerprint, resumption, and a progress bar.

Training data comes in one of two forms:
  * in memory: a pytree of arrays with a common leading axis (e.g. ``x`` or
    ``{"image": x, "label": y}``). An epoch is one jitted `lax.scan` over a
    permutation drawn inside the call: no Python per step, data on device.
  * streamed: a callable ``epoch -> iterable of batches`` (an input
    pipeline); each batch goes through the jitted step.

Determinism and resumption: the randomness of epoch ``e`` comes only from
``fold_in(key(seed), e)`` (and, for streamed data, from what the pipeline
yields for ``e``), so a run interrupted and resumed from its last checkpoint
ends with exactly the parameters of an uninterrupted run.

Fingerprints: every checkpoint records what determined it (the caller's
description of model and data, this loop's settings, the parameters'
shapes, the checkpoint format). A run resumes only from a checkpoint whose
fingerprint matches; otherwise `CheckpointMismatchError` names the fields
that differ, so a quick run's checkpoints are never passed off as a full
run's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from hecsb_jax.train import step as step_lib
from hecsb_jax.train.checkpoint import CheckpointMismatchError
from hecsb_jax.train.checkpoint import TrainCheckpointer
from hecsb_jax.train.checkpoint import compare_fingerprints

# Bumped whenever what a checkpoint holds, or how training proceeds from a
# given state, changes: older checkpoints are then refused, not misread.
TRAINER_FORMAT = 2
SCHEDULES = ("constant", "cosine")

LossFn = step_lib.LossFn
Batches = Callable[[int], Iterable[Any]]


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Optimization settings of `fit`.

  Attributes:
    epochs: number of passes over the training set.
    batch_size: examples per step (in-memory data; a streamed pipeline
      makes its own batches). The last incomplete batch of an epoch is
      dropped (a fresh permutation each epoch sees every example over time).
    learning_rate: peak Adam step size.
    schedule: ``"constant"``, or ``"cosine"``: decay from the peak to
      ``final_lr_fraction`` of it over all steps (after the warmup).
    warmup_epochs: linear warmup from 0 over this many epochs.
    final_lr_fraction: the cosine schedule's last rate, relative to the peak.
    weight_decay: decoupled weight decay (AdamW, Loshchilov & Hutter 2019)
      per unit learning rate; 0 is plain Adam. Which parameters decay is
      `fit`'s ``decay_mask``.
    seed: everything random in training derives from this.
    eval_chunk: validation examples per jitted evaluation call.
  """

  epochs: int
  batch_size: int = 100
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_epochs: float = 0.0
  final_lr_fraction: float = 0.0
  weight_decay: float = 0.0
  seed: int = 0
  eval_chunk: int = 10_000

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be one of {SCHEDULES}, got"
                       f" {self.schedule!r}")
    if self.epochs < 0 or self.batch_size < 1 or self.learning_rate <= 0:
      raise ValueError(f"invalid FitConfig: {self}")


class FitResult(NamedTuple):
  model: nnx.Module  # holds the parameters of the best validation epoch
  best_val_loss: float
  best_epoch: int  # 1-based; 0 means "no epoch run"
  history: list[dict[str, float]]
  epochs_run: int  # epochs trained by this call (0: all restored)


def kernels(params: nnx.State) -> Any:
  """Default weight-decay mask: parameters of two or more dimensions."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
    config: FitConfig,
    steps_per_epoch: int,
    decay_mask: Callable[[nnx.State], Any] | None = None,
    lr_multipliers: Any | None = None,
) -> optax.GradientTransformation:
  """Adam (AdamW when ``config.weight_decay``) under the config's schedule.

  ``lr_multipliers``: a pytree of floats shaped like the trained
  parameters (or a prefix of them): each parameter's step is its
  multiple of the scheduled rate (Adam's steps are proportional to it).
  """
  tx = _adam(config, steps_per_epoch, decay_mask)
  if lr_multipliers is None:
    return tx
  return optax.chain(tx, optax.stateless(
      lambda updates, params=None: jax.tree.map(
          lambda m, u: m * u, lr_multipliers, updates)))


def _adam(config, steps_per_epoch, decay_mask):
  peak = config.learning_rate
  total = max(1, config.epochs * steps_per_epoch)
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps=warmup, decay_steps=max(total, warmup + 1),
        end_value=peak * config.final_lr_fraction)
  elif warmup:
    lr = optax.linear_schedule(0.0, peak, warmup)  # then holds the peak
  else:
    lr = peak
  if config.weight_decay:
    return optax.adamw(lr, weight_decay=config.weight_decay,
                       mask=decay_mask or kernels)
  return optax.adam(lr)


def _shapes(tree) -> dict[str, list[int]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): list(np.shape(leaf))
          for path, leaf in flat}


def _num_examples(data) -> int:
  return int(np.shape(jax.tree.leaves(data)[0])[0])


def _copy(tree):
  # A separate buffer: the live state is donated to the next step.
  return jax.tree.map(jnp.copy, tree)


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    train: Any | Batches,
    val: Any | Callable[[], Iterable[Any]] | None,
    config: FitConfig,
    *,
    workdir: str | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    trainable: Any = nnx.Param,
    project_fn: Callable[[nnx.Module], None] | None = None,
    decay_mask: Callable[[nnx.State], Any] | None = None,
    lr_multipliers: Callable[[nnx.State], Any] | None = None,
    steps_per_epoch: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    progress_metrics: tuple[str, ...] = (),
) -> FitResult:
  """Trains ``model``; keeps the parameters of the best validation epoch.

  Args:
    model: an nnx module. It is trained in train mode (``model.train()``)
      and validated in eval mode; it ends in eval mode, holding the best
      epoch's parameters and non-trained state, and is returned. Training
      works on a copy of its arrays (the copy is donated step to step), so
      modules that share arrays with others, e.g. an `nnx.clone`d teacher,
      stay valid, and so does the model if training is interrupted.
    loss_fn: ``(model, batch, rng) -> (loss, metrics)``. The same function
      scores validation data, with one fixed rng for every epoch so that
      validation losses are comparable across epochs.
    train: in-memory training data (a pytree of arrays, leading axis =
      examples), or ``epoch -> iterable of batches`` (streamed; then
      ``steps_per_epoch`` is required). Epochs are numbered from 1.
    val: validation data in the same two forms (a streamed one is a
      callable of no argument), or None: then the last epoch is kept.
    config: optimization settings.
    workdir: if given, a checkpoint is written there after every epoch and
      training resumes from the latest one, if its fingerprint matches.
    fingerprint: JSON-able description of what determines the model beyond
      ``config`` (model settings, data identity); saved with checkpoints.
    trainable: nnx filter of the parameters to train; the rest is frozen.
    project_fn: called on the model after every optimizer step, inside the
      jitted step (projected gradient descent); mutates it in place.
    decay_mask: ``params -> pytree of bools``, what ``weight_decay``
      shrinks; by default every trained parameter of two or more dims.
    lr_multipliers: ``params -> pytree of floats``: a learning rate per
      parameter, as a multiple of the schedule's (e.g. a faster entropy
      model, which must follow the encoder it describes). None: 1 for all.
    steps_per_epoch: batches per epoch of a streamed ``train``.
    mesh: a device mesh (`step.data_mesh`): the batch is split over its data
      axis and the state replicated. None: one device. With several
      processes (`jax.distributed`), every process calls `fit` alike, a
      streamed ``train`` yields that process's part of each global batch
      (`step.shard_batch`), and the returned model holds ordinary arrays
      on one local device of each process.
    on_epoch_end: called with ``(epoch, record)`` after each epoch is
      checkpointed (logging, early stopping by raising).
    desc: progress-bar label.
    progress: show a progress bar with loss and speed.
    progress_metrics: names of ``loss_fn`` metrics shown beside the loss
      (e.g. ``("bits_per_image",)``).

  Returns:
    A `FitResult`.

  Raises:
    CheckpointMismatchError: ``workdir`` holds a checkpoint made with a
      different fingerprint.
  """
  streamed = callable(train)
  if streamed:
    if not steps_per_epoch:
      raise ValueError("streamed training data needs steps_per_epoch")
    num_steps = steps_per_epoch
  else:
    train = jax.tree.map(lambda a: jnp.asarray(a), train)
    num_steps = _num_examples(train) // config.batch_size
    if num_steps == 0:
      raise ValueError(
          f"training set of {_num_examples(train)} examples is smaller than"
          f" one batch of {config.batch_size}"
      )

  model.train()
  params = nnx.state(model, trainable)
  tx = make_optimizer(
      config, num_steps, decay_mask,
      None if lr_multipliers is None else lr_multipliers(params))
  graphdef, state = step_lib.init_state(model, tx, trainable)
  # Own buffers: the state is donated to each step, and the model's arrays
  # may be shared with other modules (a cloned teacher) or used afterwards.
  state = _copy(state)
  # Several processes: the state lives replicated on the global mesh from
  # the start, so every checkpoint orbax writes holds global arrays.
  multi_process = mesh is not None and jax.process_count() > 1
  if multi_process:
    state = jax.device_put(state, step_lib.replicated(mesh))
  model.eval()
  eval_graphdef = nnx.graphdef(model)
  model.train()
  step = step_lib.make_step(graphdef, loss_fn, tx, trainable=trainable,
                            project_fn=project_fn)
  key = jax.random.key(config.seed)
  # Epochs are numbered from 1, so fold-in 0 is free for validation noise.
  val_rng = jax.random.fold_in(key, 0)

  full_fingerprint = {
      "run": dict(fingerprint or {}),
      "trainer": dict(dataclasses.asdict(config), format=TRAINER_FORMAT,
                      streamed=streamed, steps_per_epoch=num_steps),
      "params": _shapes(state.params),
  }
  if lr_multipliers is not None:
    full_fingerprint["trainer"]["lr_multipliers"] = {
        jax.tree_util.keystr(path): float(m) for path, m in
        jax.tree_util.tree_flatten_with_path(lr_multipliers(params))[0]
        if float(m) != 1.0}

  if streamed:
    train_step = step_lib.data_parallel(step, mesh)
  else:
    sharding = step_lib.batch_sharding(mesh) if mesh is not None else None
    train_epoch = step_lib.data_parallel(
        step_lib.make_scan_epoch(step, num_steps, config.batch_size,
                                 batch_sharding=sharding),
        mesh, data_argnums=())

  @jax.jit
  def eval_batch(params, rest, batch):
    loss, metrics = loss_fn(nnx.merge(eval_graphdef, params, rest), batch,
                            val_rng)
    return dict(metrics, loss=loss)

  def validate(state) -> dict[str, float]:
    if streamed_val:
      batches = val()
    else:
      n = _num_examples(val)
      batches = (jax.tree.map(lambda a: a[i : i + config.eval_chunk], val)
                 for i in range(0, n, config.eval_chunk))
    totals, count = {}, 0
    for batch in batches:
      size = _num_examples(batch)
      for k, v in eval_batch(state.params, state.rest, batch).items():
        totals[k] = totals.get(k, 0.0) + float(v) * size
      count += size
    return {k: v / count for k, v in totals.items()}

  streamed_val = callable(val)
  if val is not None and not streamed_val:
    val = jax.tree.map(jnp.asarray, val)

  meta = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0,
          "history": [], "fingerprint": full_fingerprint}
  best = _copy({"params": state.params, "rest": state.rest})
  checkpointer = TrainCheckpointer(workdir) if workdir else None
  if checkpointer is not None and checkpointer.latest_step() is not None:
    latest = checkpointer.latest_step()
    saved = checkpointer.restore_meta(latest).get("fingerprint")
    differences = compare_fingerprints(saved, full_fingerprint)
    if differences:
      checkpointer.close()
      raise CheckpointMismatchError(workdir, differences)
    abstract = jax.eval_shape(lambda: {"state": state, "best": best})
    if multi_process:  # restore onto the mesh, as saved
      repl = step_lib.replicated(mesh)
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl),
          abstract)
    restored, meta = checkpointer.restore(latest, abstract)
    state, best = restored["state"], restored["best"]

  bar = tqdm.tqdm(
      total=config.epochs * num_steps, initial=meta["epoch"] * num_steps,
      desc=desc, disable=not progress, unit="step", dynamic_ncols=True,
  )
  epochs_run = 0
  try:
    for epoch in range(meta["epoch"] + 1, config.epochs + 1):
      start = time.perf_counter()
      epoch_key = jax.random.fold_in(key, epoch)
      examples = 0
      if streamed:
        sums = {}
        for i, batch in enumerate(train(epoch)):
          if i >= num_steps:
            break
          if mesh is not None:
            batch = step_lib.shard_batch(batch, mesh)
          examples += _num_examples(batch)  # global: all processes' parts
          state, metrics = train_step(state, batch,
                                      step_lib.step_key(epoch_key, i))
          sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
          bar.update(1)
          if i % 10 == 0:
            bar.set_postfix(
                loss=f"{float(metrics['loss']):.4g}",
                **{k: f"{float(metrics[k]):.4g}" for k in progress_metrics},
                img_s=f"{examples / (time.perf_counter() - start):.0f}")
        metrics = {k: float(v) / max(1, i + 1) for k, v in sums.items()}
      else:
        state, metrics = train_epoch(state, train, epoch_key)
        metrics = {k: float(v) for k, v in metrics.items()}
        examples = num_steps * config.batch_size
        bar.update(num_steps)
      seconds = time.perf_counter() - start
      record = dict(epoch=epoch, train_loss=metrics.pop("loss"),
                    seconds=seconds, examples_per_s=examples / seconds,
                    **{f"train_{k}": v for k, v in metrics.items()})
      if val is not None:
        val_metrics = validate(state)
        record["val_loss"] = val_loss = val_metrics.pop("loss")
        record.update({f"val_{k}": v for k, v in val_metrics.items()})
      else:
        val_loss = -float(epoch)  # no validation: the last epoch is best
      if val_loss < meta["best_val_loss"]:
        best = _copy({"params": state.params, "rest": state.rest})
        meta["best_val_loss"], meta["best_epoch"] = val_loss, epoch
      meta["epoch"] = epoch
      meta["history"].append(record)
      if checkpointer is not None:
        checkpointer.save(epoch, {"state": state, "best": best}, meta)
      epochs_run += 1
      bar.set_postfix(
          loss=f"{record['train_loss']:.4g}",
          **{k: f"{record['train_' + k]:.4g}" for k in progress_metrics},
          **({"val": f"{val_loss:.4g}"} if val is not None else {}),
          ex_s=f"{record['examples_per_s']:.0f}",
      )
      if on_epoch_end is not None:
        on_epoch_end(epoch, record)
  finally:
    bar.close()
    if checkpointer is not None:
      checkpointer.close()

  if multi_process:
    # The replicated arrays' local copies: the model then works like one
    # trained on a single device (jit on this process's data alone).
    best = jax.tree.map(lambda a: a.addressable_data(0), best)
  nnx.update(model, best["params"], best["rest"])
  model.eval()
  return FitResult(
      model=model,
      best_val_loss=float(meta["best_val_loss"]),
      best_epoch=int(meta["best_epoch"]),
      history=list(meta["history"]),
      epochs_run=epochs_run,
  )
