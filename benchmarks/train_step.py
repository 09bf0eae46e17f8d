"""Training throughput of the UAE step vs this machine's dense matmul rate.

    python -m benchmarks.train_step [--m 25] [--batch-size 100] [--quick]

Prints, from one run on one machine:
  * examples/s of the training step as the trainer runs it (a whole epoch of
    steps in one jitted `lax.scan`), and of the same step dispatched from a
    Python loop one jitted call per batch (the reference it must beat);
  * the step's FLOPs per example (XLA's own cost analysis of the compiled
    step) and so its achieved FLOP/s;
  * the machine's dense float32 matmul FLOP/s measured in the same run
    (square N x N matrices), and the fraction of it the step reaches.
"""

from __future__ import annotations

import argparse

from flax import nnx
import jax
import optax

from benchmarks.timing import best_time
from benchmarks.timing import compiled_flops
from benchmarks.timing import matmul_flops_per_s
from hecsb_jax.models.uae import UncertaintyAutoencoder, uae_loss
from hecsb_jax.train import step as step_lib


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--m", type=int, default=25)
  p.add_argument("--batch-size", type=int, default=100)
  p.add_argument("--steps", type=int, default=200,
                 help="steps per timed epoch")
  p.add_argument("--quick", action="store_true")
  args = p.parse_args(argv)
  steps = 20 if args.quick else args.steps
  repeats = 2 if args.quick else 5

  model = UncertaintyAutoencoder(784, args.m, rngs=nnx.Rngs(0))
  tx = optax.adam(1e-3)
  graphdef, state = step_lib.init_state(model, tx)
  step = step_lib.make_step(graphdef, uae_loss, tx,
                            project_fn=lambda m: m.project_())
  data = jax.random.uniform(jax.random.key(2),
                            (steps * args.batch_size, 784))
  key = jax.random.key(0)

  # No donation here: every timed call starts from the same state.
  epoch_fn = jax.jit(step_lib.make_scan_epoch(step, steps, args.batch_size))
  scan_s = best_time(lambda: epoch_fn(state, data, key), repeats)
  scan_rate = steps * args.batch_size / scan_s

  # Reference: the same step, one jitted call per batch from Python.
  one_step = jax.jit(step)
  batches = [data[i * args.batch_size:(i + 1) * args.batch_size]
             for i in range(steps)]

  def loop():
    s = state
    for i, batch in enumerate(batches):
      s, _ = one_step(s, batch, step_lib.step_key(key, i))
    return s

  loop_s = best_time(loop, repeats)
  loop_rate = steps * args.batch_size / loop_s

  flops_per_example = compiled_flops(one_step, state, batches[0],
                                     key) / args.batch_size
  peak = matmul_flops_per_s(512 if args.quick else 2048, repeats)
  achieved = scan_rate * flops_per_example

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"UAE m={args.m}, hidden 600x600, batch {args.batch_size}")
  print(f"{'':34s}{'examples/s':>12s}{'GFLOP/s':>10s}")
  print(f"{'ours: scanned epoch (trainer)':34s}{scan_rate:12.0f}"
        f"{achieved / 1e9:10.2f}")
  print(f"{'reference: Python loop of jit steps':34s}{loop_rate:12.0f}"
        f"{loop_rate * flops_per_example / 1e9:10.2f}")
  print(f"{'dense f32 matmul (this machine)':34s}{'':12s}{peak / 1e9:10.2f}")
  print(f"step FLOPs/example (XLA cost analysis): {flops_per_example:.3e}")
  print(f"speed-up over the Python loop: {scan_rate / loop_rate:.2f}x; "
        f"fraction of dense matmul throughput: {achieved / peak:.1%}")


if __name__ == "__main__":
  main()
