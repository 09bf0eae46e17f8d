"""Orbax checkpoints for the training loop: arrays plus a small JSON record.

Each checkpoint step holds two items:
  * ``state``: a pytree of arrays (parameters, optimizer state, the best
    parameters so far), saved and restored exactly (bit for bit);
  * ``meta``: JSON (epoch, best validation loss, history), human-readable.

Restoring needs an abstract target (``jax.eval_shape`` of a freshly built
state) so arrays come back with the right tree structure and dtypes.
"""

from __future__ import annotations

import os
from typing import Any

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
