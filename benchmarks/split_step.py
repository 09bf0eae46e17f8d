"""Training throughput of split_rd's two stages vs this machine's matmul rate.

    python -m benchmarks.split_step [--batch-size 32] [--repeats 3] [--quick]

The model is split_rd's full-scale config (EfficientNet-Lite0 cut after
block4, the teacher's prefix as frozen acquisition, its m, decoder width
128) with random weights: throughput does not depend on their values.
Prints, from one run on one machine:
  * images/s of each jitted training step as split_rd runs it: stage 1
    (head distillation; teacher features computed in the step), stage 2
    training the decoder (split_rd's default) and stage 2 training decoder
    and tail (sc2bench's choice);
  * the same steps with every depthwise convolution as one grouped XLA
    convolution (the reference it must beat; ours writes it as a sum of
    k x k shifted, scaled copies, see models/efficientnet_lite.py);
  * each step's FLOPs per image (XLA's cost analysis of that compiled step:
    what it executes; XLA counts the grouped convolution's weight gradient
    as if it were dense, so the reference's count is inflated when the
    tail trains), its achieved FLOP/s and the fraction of the dense float32 matmul rate
    measured in the same run;
  * images/s of the grain input pipeline alone (random resized crop, flip,
    normalize from the uint8 cache), which must stay above the steps'.
"""

from __future__ import annotations

import argparse
import time

from flax import nnx
import jax
import numpy as np
import optax

from benchmarks.timing import best_time
from benchmarks.timing import compiled_flops
from benchmarks.timing import matmul_flops_per_s
from experiments import split_rd_methods
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.models import distill_losses as dl
from hecsb_jax.models.efficientnet_lite import EfficientNetLite0
from hecsb_jax.train import step as step_lib

BETA = 1e-4
STEPS = ("stage1", "stage2 decoder", "stage2 decoder+tail")


def build_step(config, impl: str, which: str):
  """(jitted step, its state) for one stage on a fresh random model."""
  teacher = EfficientNetLite0(depthwise_impl=impl, rngs=nnx.Rngs(0))
  teacher.eval()
  pair = split_rd_methods.METHODS["hecsb"].build(teacher, config, BETA)
  if which == "stage1":
    loss_fn = dl.make_stage1_loss(BETA, reuse_teacher_features=True)
    trainable = dl.stage1_trainable(train_acquisition=False)
  else:
    s2 = config.stage2
    loss_fn = dl.make_stage2_loss(s2.alpha, s2.temperature)
    trainable = split_rd_methods.stage2_filter(
        "decoder" if which.endswith("decoder") else "decoder_tail",
        train_acquisition=False)
  pair.train()
  tx = optax.adam(1e-4)
  graphdef, state = step_lib.init_state(pair, tx, trainable)
  step = step_lib.make_step(graphdef, loss_fn, tx, trainable=trainable,
                            project_fn=dl.project)
  return jax.jit(step), state


def pipeline_rate(batch_size: int, batches: int) -> float:
  """images/s of split_rd's training pipeline on random uint8 crops."""
  rng = np.random.default_rng(0)
  n = batch_size * batches
  source = pipeline.ArraySource(
      rng.integers(0, 256, (n, 224, 224, 3), np.uint8),
      np.zeros(n, np.int32))
  epoch = pipeline.train_fn(source, batch_size=batch_size, seed=0,
                            norm=pipeline.normalization("efficientnet_lite0"))
  start = time.perf_counter()
  count = sum(len(b["label"]) for b in epoch(0))
  return count / (time.perf_counter() - start)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--quick", action="store_true",
                 help="batch 4, one repeat, small matmul: a smoke run")
  args = p.parse_args(argv)
  batch_size = 4 if args.quick else args.batch_size
  repeats = 1 if args.quick else args.repeats

  config = split_rd_config.get_config()
  rng = np.random.default_rng(0)
  batch = {
      "image": jax.numpy.asarray(
          rng.standard_normal((batch_size, 224, 224, 3), np.float32)),
      "label": jax.numpy.asarray(
          rng.integers(0, 1000, batch_size).astype(np.int32)),
  }
  key = jax.random.key(0)
  rows = []
  for which in STEPS:
    for impl in ("shifted_sum", "grouped"):
      jitted, state = build_step(config, impl, which)
      seconds = best_time(lambda: jitted(state, batch, key), repeats)
      flops = compiled_flops(jitted, state, batch, key) / batch_size
      rows.append((which, impl, batch_size / seconds, flops))
      print(f"  measured {which} ({impl}): {batch_size / seconds:.1f}"
            " images/s", flush=True)
  peak = matmul_flops_per_s(512 if args.quick else 2048, max(repeats, 2))
  feed = pipeline_rate(batch_size, 2 if args.quick else 8)

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; "
        f"EfficientNet-Lite0 cut after {config.split}, m="
        f"{config.hecsb.num_measurements}, decoder width "
        f"{config.hecsb.decoder_width}, batch {batch_size}, 224x224")
  print(f"{'step':22s}{'depthwise':>19s}{'images/s':>10s}"
        f"{'GFLOP/img':>11s}{'GFLOP/s':>9s}{'of matmul':>11s}")
  by_step = {}
  for which, impl, rate, flops in rows:
    label = "ours" if impl == "shifted_sum" else "reference"
    print(f"{which:22s}{label + ' ' + impl:>19s}{rate:10.1f}"
          f"{flops / 1e9:11.2f}{rate * flops / 1e9:9.1f}"
          f"{rate * flops / peak:11.1%}")
    by_step.setdefault(which, {})[impl] = rate
  print(f"{'dense f32 matmul':22s}{'':19s}{'':10s}{'':11s}"
        f"{peak / 1e9:9.1f}")
  print(f"input pipeline (grain, uint8 cache -> crop/flip/normalize): "
        f"{feed:.1f} images/s")
  for which, rates in by_step.items():
    print(f"{which}: shifted-sum depthwise is "
          f"{rates['shifted_sum'] / rates['grouped']:.2f}x the grouped"
          " convolution")


if __name__ == "__main__":
  main()
