"""What the edge device pays: the HECS-B head beside the whole network.

    python -m benchmarks.edge_cost [--data-dir ../shared/data] [--repeats 20]

One image at a time on ONE CPU thread (the process is pinned to one core and
XLA's CPU thread pool is turned off before JAX starts), the way a small edge
device runs it. Rows, each with parameters on the edge, FLOPs per image
(XLA's cost analysis of the compiled batch-of-one function, multiplies and
adds counted apart) and milliseconds per image (best of --repeats):
  * the whole EfficientNet-Lite0 on the edge (image -> logits; the
    reference: what the split saves the device);
  * the HECS-B head with the teacher's own layers up to block4 as
    acquisition (split_rd's default; fine-tuning those layers changes their
    values, not this cost), image -> int32 symbols, plus the entropy coder's
    time for those symbols (native range coder, one container);
  * the HECS-B head with a from-scratch shallow acquisition network;
  * the teacher's layers up to block4 alone (what the head adds to them:
    the 1x1 measurement and the rounding);
  * Pillow's JPEG encoder (q=50) on the 224 x 224 crop, for the codec
    baselines' edge cost.
Weights are EfficientNet-Lite0's pretrained ones when --data-dir has them
(random otherwise; the cost is the same), the bottleneck is untrained: cost
depends on shapes, not values (the coder's time a little on the symbols).
Depthwise convolutions are timed both ways (shifted sums, grouped) and the
faster is reported.
"""

from __future__ import annotations

import os

# One thread, before JAX is imported: pin the process to one core and
# disable XLA's multi-threaded Eigen kernels.
if hasattr(os, "sched_setaffinity"):
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import io
from pathlib import Path
import time

from flax import nnx
import jax
import numpy as np
from PIL import Image

from benchmarks.timing import best_time
from benchmarks.timing import compiled_flops
from experiments import split_rd_models
from hecsb_jax import coding
from hecsb_jax import entropy
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import pretrained
from hecsb_jax.models.efficientnet_lite import EfficientNetLite0

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared/data"
IMPLS = ("shifted_sum", "grouped")


def param_count(module: nnx.Module) -> int:
  return sum(int(np.prod(v.shape))
             for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


def prefix_params(net: EfficientNetLite0, split: str) -> int:
  """Parameters of the stem and blocks up to ``split`` (a block name)."""
  stop = net.split_points.index(split)  # split_points[0] is "stem"
  return param_count(net.stem) + sum(
      param_count(block) for block in list(net.blocks)[:stop])


def teacher(data_dir: Path, impl: str) -> tuple[nnx.Module, str]:
  path = data_dir / pretrained.EFFICIENTNET_LITE0_NPZ
  if path.is_file():
    model = pretrained.load_efficientnet_lite0(path)
    weights = "pretrained"
  else:
    model = EfficientNetLite0(rngs=nnx.Rngs(0))
    model.eval()
    weights = "random"
  model.set_depthwise_impl(impl)
  return model, weights


def measure(module: nnx.Module, fn, x, repeats: int) -> tuple[float, float]:
  """(FLOPs, seconds) of ``fn(module, x)`` jitted, best of ``repeats``."""
  graphdef, state = nnx.split(module)
  jitted = jax.jit(lambda s, x: fn(nnx.merge(graphdef, s), x))
  seconds = best_time(lambda: jitted(state, x), repeats)
  return compiled_flops(jitted, state, x), seconds


def edge_rows(data_dir: Path, repeats: int) -> tuple[list[dict], str]:
  config = split_rd_config.get_config()
  shallow_config = split_rd_config.get_config()
  shallow_config.hecsb.acquisition = "shallow"
  shallow_config.hecsb.train_acquisition = True
  x = jax.numpy.asarray(np.random.default_rng(0).standard_normal(
      (1, 224, 224, 3), np.float32))
  whole = lambda m, x: m(x)
  prefix_fn = lambda m, x: m.features(x, until=config.split)
  symbols = lambda m, x: m.edge_symbols(x)
  rows, weights = {}, "random"
  for impl in IMPLS:
    net, weights = teacher(data_dir, impl)
    prefix_pair = split_rd_models.build_pair(net, config, 1e-4)
    shallow_pair = split_rd_models.build_pair(net, shallow_config, 1e-4)
    # On the edge: acquisition and measurement (the prior's CDF tables are
    # data, not parameters). A TeacherPrefix holds a whole copy of the
    # teacher but runs only the layers up to the split.
    prefix = prefix_params(net, config.split)
    measurement = param_count(prefix_pair.student.bottleneck.measurement)
    shallow = shallow_pair.student.bottleneck
    for name, module, fn, params in (
        ("whole EfficientNet-Lite0 (reference)", net, whole,
         param_count(net)),
        ("HECS-B head, teacher prefix", prefix_pair.student, symbols,
         prefix + measurement),
        ("HECS-B head, shallow encoder", shallow_pair.student, symbols,
         param_count(shallow.acquisition) + param_count(shallow.measurement)),
        (f"teacher prefix alone (to {config.split})", net, prefix_fn,
         prefix)):
      module.eval()
      flops, seconds = measure(module, fn, x, repeats)
      row = rows.setdefault(name, {"name": name, "params": params,
                                   "seconds": seconds, "impl": impl})
      if impl == "grouped":  # the conventional FLOP count
        row["flops"] = flops
      if seconds < row["seconds"]:
        row.update(seconds=seconds, impl=impl)
  # The coder, on the prefix head's symbols for one image.
  student = prefix_pair.student
  tables = entropy.build_tables(student.bottleneck.entropy)
  sym = np.asarray(student.edge_symbols(x))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    data = coding.compress(sym, tables)
    best = min(best, time.perf_counter() - start)
  rows["HECS-B head, teacher prefix"]["coder_seconds"] = best
  rows["HECS-B head, teacher prefix"]["bytes"] = len(data)
  return list(rows.values()), weights


def jpeg_seconds(repeats: int) -> float:
  image = Image.fromarray(np.random.default_rng(0).integers(
      0, 256, (224, 224, 3), np.uint8))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    image.save(io.BytesIO(), format="JPEG", quality=50, optimize=True)
    best = min(best, time.perf_counter() - start)
  return best


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
  p.add_argument("--repeats", type=int, default=20)
  args = p.parse_args(argv)
  rows, weights = edge_rows(args.data_dir, args.repeats)
  threads = len(os.sched_getaffinity(0)) if hasattr(
      os, "sched_getaffinity") else "?"
  print(f"device: {jax.devices()[0].device_kind}, {threads} core(s) for this"
        f" process, batch 1, 224x224, {weights} EfficientNet-Lite0 weights")
  whole = rows[0]
  print(f"{'on the edge':40s}{'params':>10s}{'GFLOPs':>8s}{'ms/img':>8s}"
        f"{'vs whole':>9s}  depthwise")
  for row in rows:
    print(f"{row['name']:40s}{row['params']:10,d}{row['flops'] / 1e9:8.3f}"
          f"{row['seconds'] * 1e3:8.2f}"
          f"{row['seconds'] / whole['seconds']:9.1%}  {row['impl']}")
  coded = rows[1]
  print(f"{'  + range coder (one container)':40s}{'':10s}{'':8s}"
        f"{coded['coder_seconds'] * 1e3:8.2f}{'':9s}"
        f"  {coded['bytes']} B, untrained prior")
  print(f"{'Pillow JPEG q=50 (codec baselines)':40s}{0:10,d}{'':8s}"
        f"{jpeg_seconds(args.repeats) * 1e3:8.2f}")
  print(f"HECS-B edge (prefix head + coder) vs whole network: "
        f"{(coded['seconds'] + coded['coder_seconds']) / whole['seconds']:.1%}"
        " of the time, "
        f"{coded['flops'] / whole['flops']:.1%} of the FLOPs, "
        f"{coded['params'] / whole['params']:.1%} of the parameters")


if __name__ == "__main__":
  main()
