"""Orbax checkpoints for the training loop: arrays plus a small JSON record.

Each checkpoint step holds two items:
  * ``state``: a pytree of arrays (parameters, optimizer state, the best
    parameters so far), saved and restored exactly (bit for bit);
  * ``meta``: JSON (epoch, best validation loss, history, and the
    fingerprint of what made the checkpoint), human-readable.

Restoring needs an abstract target (``jax.eval_shape`` of a freshly built
state) so arrays come back with the right tree structure and dtypes.

Several processes (`jax.distributed`): every process calls `save` and
`restore` alike (orbax coordinates them). Global arrays are written shard
by shard; host-local ones (each process's own copy of the same values,
e.g. a model after `fit`) are written once, as numpy, and come back to
each process as local arrays.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


def _is_host_local(leaf) -> bool:
  """A jax.Array that lives on this process alone, with several processes
  (orbax refuses those: it cannot tell that all processes agree)."""
  return (jax.process_count() > 1 and isinstance(leaf, jax.Array)
          and leaf.is_fully_addressable)


def _is_local_target(leaf) -> bool:
  sharding = getattr(leaf, "sharding", None)
  return jax.process_count() > 1 and (
      sharding is None or sharding.is_fully_addressable)


class TrainCheckpointer:
  """Keeps the latest ``max_to_keep`` training checkpoints in a directory."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 1):
    self.directory = os.fspath(os.path.abspath(directory))
    # Synchronous saves: checkpoints are small, and a synchronous save means
    # an interruption right after `save` returns loses nothing.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta")
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.tree.map(
                lambda a: np.asarray(a) if _is_host_local(a) else a,
                state)),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )
    self._manager.wait_until_finished()

  def restore_meta(self, step: int) -> dict[str, Any]:
    """The JSON record saved at ``step``, without touching the arrays."""
    restored = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` saved at ``step`` into ``abstract_state``."""
    local = jax.tree.map(_is_local_target, abstract_state)
    # Several processes: local targets restore as numpy (what `save` wrote
    # for host-local arrays), then go to this process's default device.
    abstract_state = jax.tree.map(
        lambda a, is_local: (np.zeros(a.shape, a.dtype) if is_local else
                             ocp.utils.to_shape_dtype_struct(a)),
        abstract_state, local)
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            meta=ocp.args.JsonRestore(),
        ),
    )
    state = jax.tree.map(
        lambda a, is_local: jnp.asarray(a) if is_local else a,
        restored["state"], local)
    return state, restored["meta"]

  def close(self) -> None:
    self._manager.close()


class CheckpointMismatchError(ValueError):
  """A checkpoint was made by a different run than the one resuming it.

  Attributes:
    directory: the checkpoint folder.
    differences: ``[(field, saved value, current value), ...]``, fields as
      dotted paths into the fingerprint.
  """

  def __init__(self, directory: str, differences: list[tuple[str, Any, Any]]):
    self.directory = directory
    self.differences = differences
    shown = "; ".join(f"{field}: {saved!r} in the checkpoint, {now!r} now"
                      for field, saved, now in differences[:8])
    more = len(differences) - 8
    super().__init__(
        f"the checkpoint in {directory} was made with other settings"
        f" ({shown}{f'; and {more} more' if more > 0 else ''}); train into"
        " another directory, or delete this one to start over"
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out if tree or not prefix else {prefix: {}}
  return {prefix: tree}


def compare_fingerprints(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
  """The fields where two fingerprints differ, after a JSON round trip.

  A missing fingerprint (a checkpoint from before fingerprints) differs
  from every current one.
  """
  current = json.loads(json.dumps(current))
  if saved is None:
    return [("fingerprint", None, "present")]
  a, b = _flatten(saved), _flatten(current)
  return [(k, a.get(k, "<absent>"), b.get(k, "<absent>"))
          for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") !=
          b.get(k, "<absent>")]
