"""One optimizer step, ``(state, batch, rng) -> (state, metrics)``, and its
whole-epoch and data-parallel forms.

    model ──nnx.split(model, trainable, ...)──► graphdef, params, rest
    TrainState(step, params, rest, opt_state)
        │  batch: any pytree of arrays whose leaves share the leading
        │  (example) axis: images, labels, teacher targets, ...
        ▼
    make_step(...)(state, batch, rng) -> (state', metrics)

``params`` is what the optimizer trains (by default every `nnx.Param`; any
nnx filter selects a subset, e.g. only the decoder). ``rest`` is everything
else the model holds: frozen parameters and mutable non-parameter state such
as BatchNorm statistics, which the loss may update (their new values come
back in ``state.rest``; they receive no gradient).

Everything here is a pure function of its arguments, so one function serves
a Python loop over an input pipeline (`make_step`, jitted), an epoch of an
in-memory array as one `lax.scan` (`make_scan_epoch`: no per-step dispatch),
and a batch sharded over a device mesh (`data_parallel`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

# loss_fn(model, batch, rng) -> (scalar loss, {name: scalar metric}).
LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict]]
DATA_AXIS = "data"


class TrainState(NamedTuple):
  """Everything that changes during training (a pytree; checkpointed)."""

  step: jax.Array  # int32 scalar, optimizer steps taken
  params: nnx.State  # trained
  rest: nnx.State  # not trained: frozen parameters, BatchNorm statistics
  opt_state: optax.OptState


def init_state(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    trainable: Any = nnx.Param,
) -> tuple[nnx.GraphDef, TrainState]:
  """Splits ``model`` into its graph and a fresh `TrainState`."""
  graphdef, params, rest = nnx.split(model, trainable, ...)
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, rest=rest,
      opt_state=tx.init(params),
  )
  return graphdef, state


def make_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    trainable: Any = nnx.Param,
    project_fn: Callable[[nnx.Module], None] | None = None,
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict]]:
  """Builds the pure (unjitted) training step.

  Args:
    graphdef: from `init_state`.
    loss_fn: ``(model, batch, rng) -> (loss, metrics)``; it may update the
      model's non-trained state (BatchNorm statistics) in place.
    tx: the optimizer.
    trainable: the nnx filter `init_state` used.
    project_fn: applied to the model after every update (projected gradient
      descent onto a constraint set); mutates the model in place.

  Returns:
    ``step(state, batch, rng) -> (state, metrics)``, metrics including
    ``loss``.
  """

  def loss_of(params, rest, batch, rng):
    # copy=True: fresh Variables at this trace level, so the loss may
    # update BatchNorm statistics inside `value_and_grad`.
    model = nnx.merge(graphdef, params, rest, copy=True)
    loss, metrics = loss_fn(model, batch, rng)
    _, new_rest = nnx.state(model, trainable, ...)
    return loss, (metrics, new_rest)

  def step(state: TrainState, batch, rng):
    (loss, (metrics, rest)), grads = jax.value_and_grad(
        loss_of, has_aux=True
    )(state.params, state.rest, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if project_fn is not None:
      model = nnx.merge(graphdef, params, rest, copy=True)
      project_fn(model)
      params, rest = nnx.state(model, trainable, ...)
    new_state = TrainState(step=state.step + 1, params=params, rest=rest,
                           opt_state=opt_state)
    return new_state, dict(metrics, loss=loss)

  return step


def step_key(epoch_key: jax.Array, index) -> jax.Array:
  """The rng of step ``index`` (0-based) of an epoch; 0 is the shuffle's."""
  return jax.random.fold_in(epoch_key, index + 1)


def epoch_permutation(epoch_key: jax.Array, num_examples: int) -> jax.Array:
  return jax.random.permutation(jax.random.fold_in(epoch_key, 0),
                                num_examples)


def make_scan_epoch(
    step: Callable,
    num_steps: int,
    batch_size: int,
    *,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
  """One epoch over an in-memory dataset as a single `lax.scan`.

  ``epoch(state, data, epoch_key) -> (state, mean metrics)``: ``data`` is a
  pytree of arrays with a common leading axis; the epoch visits
  ``num_steps`` batches of a permutation drawn from ``epoch_key`` (the last
  incomplete batch is dropped), step i using `step_key(epoch_key, i)`.
  Not jitted: wrap it (`jax.jit`, or `data_parallel`).
  """

  def epoch(state, data, epoch_key):
    n = jax.tree.leaves(data)[0].shape[0]
    order = epoch_permutation(epoch_key, n)[: num_steps * batch_size]
    order = order.reshape(num_steps, batch_size)

    def body(state, i):
      batch = jax.tree.map(lambda a: a[order[i]], data)
      if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      return step(state, batch, step_key(epoch_key, i))

    state, metrics = jax.lax.scan(body, state, jnp.arange(num_steps))
    return state, jax.tree.map(jnp.mean, metrics)

  return epoch


# ------------------------------------------------------------ data parallel


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every host)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(devices.reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Leading (example) axis split over the mesh's data axis."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def shard_batch(batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places a batch on the mesh, split along its leading axis.

  One process: ``batch`` is the whole (global) batch, and its size must be
  a multiple of the mesh's device count. Several processes
  (`jax.distributed`): ``batch`` is this process's part of the global
  batch (e.g. `imagenet_pipeline.train_batches` with ``shard``), spread
  over this process's devices of the mesh; the global batch is the
  processes' parts side by side, so its size must be a multiple of this
  process's device count.

  Raises:
    ValueError: the (local) batch does not split evenly over the devices.
  """
  sharding = batch_sharding(mesh)
  multi_process = jax.process_count() > 1
  size = len(mesh.local_devices) if multi_process else mesh.devices.size
  where = (f"this process's {size} devices (process"
           f" {jax.process_index()} of {jax.process_count()})"
           if multi_process else f"{size} devices")
  for leaf in jax.tree.leaves(batch):
    shape = np.shape(leaf)
    if not shape:
      raise ValueError("every leaf of a batch needs a leading (example)"
                       f" axis; found a scalar of shape {shape}")
    if shape[0] % size:
      raise ValueError(
          f"batch of {shape[0]} examples does not split over {where}; use"
          " a batch size that is a multiple of the device count"
      )
  if multi_process:
    # Each process holds only its rows: assemble the global array from the
    # processes' local parts instead of copying a host batch to devices
    # that belong to other processes.
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, leaf),
        batch)
  return jax.device_put(batch, sharding)


def data_parallel(
    fn: Callable,
    mesh: jax.sharding.Mesh | None,
    *,
    donate_state: bool = True,
    data_argnums: tuple[int, ...] = (1,),
) -> Callable:
  """Jits ``fn(state, ...)`` with the state replicated over ``mesh`` and the
  arguments in ``data_argnums`` split along their leading axis.

  Gradients of a mean loss over a sharded batch are reduced across devices
  by XLA (the sharding propagates through the step), so the result equals
  the single-device step up to float summation order. ``mesh=None`` is a
  plain `jax.jit`. ``donate_state`` lets XLA update the state in place
  (callers must not reuse the state they passed in).
  """
  donate = (0,) if donate_state else ()
  if mesh is None:
    return jax.jit(fn, donate_argnums=donate)
  repl, split = replicated(mesh), batch_sharding(mesh)

  def shardings(num_args):
    return tuple(split if i in data_argnums else repl
                 for i in range(num_args))

  jitted = {}

  def call(*args):
    if len(args) not in jitted:
      jitted[len(args)] = jax.jit(
          fn, in_shardings=shardings(len(args)), out_shardings=repl,
          donate_argnums=donate,
      )
    return jitted[len(args)](*args)

  return call
