"""Two real processes (`jax.distributed` over gloo on CPU, two devices each)
train like one: `fit` with a streamed pipeline in which each process
yields only its half of every global batch, `step.shard_batch` assembling
the global array, and orbax checkpoints (the training state on the mesh,
then the finished host-local model) written and restored by both."""

import os
from pathlib import Path
import socket
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import optax
import pytest

from hecsb_jax.train import distributed
from hecsb_jax.train import step as step_lib
from hecsb_jax.train.checkpoint import TrainCheckpointer
from hecsb_jax.train.trainer import FitConfig, fit

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH, STEPS = 8, 3
CONFIG = FitConfig(epochs=2, batch_size=BATCH, learning_rate=0.05, seed=4)


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH * STEPS, 5)).astype(np.float32)
  return {"x": x, "y": x @ rng.normal(size=(5, 3)).astype(np.float32)}


def _model():
  return nnx.Linear(5, 3, rngs=nnx.Rngs(0))


def _mse(model, batch, rng):
  del rng
  return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}


def _batches(shard=(0, 1)):
  """epoch -> the rows of each global batch that belong to ``shard``
  (the split of `imagenet_pipeline.train_batches`)."""
  data = _data()
  index, count = shard

  def epoch_batches(epoch):
    order = np.random.default_rng(epoch).permutation(BATCH * STEPS)
    for k in range(STEPS):
      rows = order[k * BATCH : (k + 1) * BATCH][index::count]
      yield {name: a[rows] for name, a in data.items()}

  return epoch_batches


def _params(model):
  return {"kernel": np.asarray(model.kernel[...]),
          "bias": np.asarray(model.bias[...])}


def _worker(port: int, process_id: int, workdir: str, out: str) -> None:
  """One of the two processes (run as ``python THIS_FILE ...``)."""
  distributed.initialize(f"localhost:{port}", 2, process_id)
  assert jax.process_count() == 2 and jax.device_count() == 4
  mesh = step_lib.data_mesh()
  shard = (jax.process_index(), jax.process_count())
  result = fit(_model(), _mse, _batches(shard), None, CONFIG,
               workdir=workdir, steps_per_epoch=STEPS, mesh=mesh,
               progress=False)
  assert result.epochs_run == 2
  # Rerun: both processes restore the finished checkpoint, train nothing.
  again = fit(_model(), _mse, _batches(shard), None, CONFIG,
              workdir=workdir, steps_per_epoch=STEPS, mesh=mesh,
              progress=False)
  assert again.epochs_run == 0
  for a, b in zip(_params(result.model).values(),
                  _params(again.model).values()):
    np.testing.assert_array_equal(a, b)
  # The model is an ordinary local one: plain jit on this process's data.
  y = nnx.jit(lambda m, x: m(x))(result.model, _data()["x"][:3])
  assert y.shape == (3, 3)
  # The finished model (host-local arrays) through a checkpoint, as
  # split_rd saves it: written once, restored by both.
  checkpointer = TrainCheckpointer(os.path.join(workdir, "model"))
  checkpointer.save(0, nnx.state(result.model), {"done": True})
  restored, meta = checkpointer.restore(0, nnx.state(_model()))
  checkpointer.close()
  assert meta == {"done": True}
  for a, b in zip(jax.tree.leaves(nnx.state(result.model)),
                  jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  np.savez(f"{out}{process_id}.npz", **_params(result.model))
  distributed.barrier("done")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process(tmp_path):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=os.pathsep.join(
                 [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
  procs = [subprocess.Popen(
      [sys.executable, __file__, str(port), str(i), str(tmp_path / "ckpt"),
       str(tmp_path / "params")],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=50)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i}:\n{outputs[i][-3000:]}"

  one = fit(_model(), _mse, _batches(), None, CONFIG,
            steps_per_epoch=STEPS, progress=False)
  want = _params(one.model)
  for i in range(2):
    got = np.load(tmp_path / f"params{i}.npz")
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5,
                                 atol=1e-6)
  # Two epochs moved the parameters (the comparison is not vacuous).
  assert not np.allclose(want["kernel"], _params(_model())["kernel"])


def test_shard_batch_needs_a_batch_the_devices_divide():
  mesh = step_lib.data_mesh(jax.devices()[:1])
  with pytest.raises(ValueError, match="leading"):
    step_lib.shard_batch({"x": np.float32(1.0)}, mesh)


def test_initialize_wants_all_three_cluster_arguments_or_none():
  with pytest.raises(ValueError, match="or none of them"):
    distributed.initialize("localhost:1234")
  with pytest.raises(ValueError, match="not in 0 .. 1"):
    distributed.initialize("localhost:1234", 2, 2)


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
