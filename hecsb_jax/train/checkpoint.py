"""Orbax checkpoints for the training loop: arrays plus a small JSON record.

Each checkpoint step holds two items:
  * ``state``: a pytree of arrays (parameters, optimizer state, the best
    parameters so far), saved and restored exactly (bit for bit);
  * ``meta``: JSON (epoch, best validation loss, history, and the
    fingerprint of what made the checkpoint), human-readable.

Restoring needs an abstract target (``jax.eval_shape`` of a freshly built
state) so arrays come back with the right tree structure and dtypes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp


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
            state=ocp.args.StandardSave(state),
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
    abstract_state = jax.tree.map(
        ocp.utils.to_shape_dtype_struct, abstract_state
    )
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return restored["state"], restored["meta"]

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
