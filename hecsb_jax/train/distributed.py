"""Several hosts, one training run: `jax.distributed` set-up and helpers.

    host 0 ─┐                          every process runs the same program:
    host 1 ─┼─ jax.distributed ─►   one global device mesh (`step.data_mesh`),
    ...    ─┘   .initialize()       its own slice of each batch
                                    (`imagenet_pipeline.train_batches(shard=)`),
                                    gradients all-reduced by XLA

`initialize` must run before anything touches a JAX device. With no
arguments JAX finds the cluster itself (Cloud TPU pod slices, SLURM, Open
MPI); on other clusters every process names the coordinator, the number of
processes and its own index.

Side effects (files, reports) belong to one process: `is_primary`. Where
the others must wait for them (a file the primary writes and all read),
`barrier`.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
  """Joins this process to the run's other processes.

  Args:
    coordinator: "HOST:PORT" of process 0's coordinator service; None lets
      JAX detect the cluster (TPU pod, SLURM, Open MPI).
    num_processes: the number of processes (with ``coordinator``).
    process_id: this process's index, 0 .. num_processes - 1.

  Raises:
    ValueError: only some of the three arguments are given, or
      ``process_id`` is out of range.
  """
  given = [a is not None for a in (coordinator, num_processes, process_id)]
  if any(given) and not all(given):
    raise ValueError("give all of coordinator, num_processes and process_id"
                     " (a cluster JAX cannot detect), or none of them")
  if all(given) and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id {process_id} is not in 0 .."
                     f" {num_processes - 1}")
  # CPU devices of different processes talk through gloo (the default CPU
  # backend has no cross-process collectives); GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator,
                             num_processes=num_processes,
                             process_id=process_id)


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (a no-op with
  one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
