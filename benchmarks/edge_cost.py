"""What the edge device pays, per method, and what the server then does.

    python -m benchmarks.edge_cost [--data-dir ../shared/data] [--repeats 20]
        [--json edge_cost.json]
        [--results runs/split_rd/results.json --plot edge_time.png]
    python -m benchmarks.edge_cost --quick   # smoke run: 2 repeats

One image at a time on ONE CPU thread (the process is pinned to one core and
XLA's CPU thread pool is turned off before JAX starts), the way a small edge
device runs it. Edge rows, each with the parameters that live on the edge
(only what runs there), FLOPs per image (XLA's cost analysis of the
compiled batch-of-one function, multiplies and adds counted apart),
milliseconds per image (best of --repeats) and the memory of that compiled
function:
  * the whole EfficientNet-Lite0 on the edge (image -> logits; the
    reference: what the split saves the device);
  * every learned method of split_rd (`split_rd_methods.METHODS`), built
    at the first value of its config list, image -> what it sends:
      hecsb: the teacher's own layers up to the split + the 1x1
        measurement + rounding (split_rd's default acquisition; fine-tuning
        those layers changes their values, not this cost);
      svb: its three strided residual blocks;
      crbq: the teacher's prefix + the channel reduction + 8-bit
        quantization (k, the reduction's output channels, adds only a
        28x28x40xk 1x1 conv: the cost barely depends on k);
      neural_codec: the analysis transform g_a (not g_s nor the prior);
    plus the time to turn those symbols into the payload: the native range
    coder (one container) for the entropy-coded ones, `pack_batch` for
    CR+BQ;
  * the HECS-B head with a from-scratch shallow acquisition network;
  * the teacher's layers up to the split alone (what the HECS-B head adds
    to them: the 1x1 measurement and the rounding);
  * Pillow's JPEG, WebP and PNG encoders on the 224 x 224 crop at the
    settings split_rd scores (`split_rd_eval.codec_settings`), the codec
    baselines' edge cost.
Memory: XLA's buffer assignment of the compiled function
(`compiled.memory_analysis()`): argument bytes (the parameters the function
reads, which jit keeps after dropping unused ones, e.g. the teacher's
layers after the split, plus the input image) + output bytes + temp bytes
(every intermediate, with buffers reused across disjoint lifetimes). The
working set of one call, not the process's resident size (no Python, JAX
runtime or executable code); "n/a" where this JAX gives no analysis.

Server: per learned method, the time per image to decode the payload
(`Method.from_bytes`) and run the server's function at batch 1 (decoder +
the teacher's tail, or the codec's g_s then the whole teacher), measured in
this same process on the same ONE thread: a real server has more threads
(and an accelerator), so these are upper bounds. For the image codecs, the
Pillow decode plus the whole teacher.

Weights are EfficientNet-Lite0's pretrained ones when --data-dir has them
(random otherwise; the cost is the same); the methods' own layers and
priors are untrained: cost depends on shapes, not values (the coder's time
and the byte counts a little on the symbols, so they are not the trained
models' sizes; results.json has those). The image is the first of
--data-dir's imagenet_samples (a smooth random one without it). Depthwise
convolutions are timed both ways (shifted sums, grouped) and the faster's
time and memory are reported, with the grouped one's FLOPs (the
conventional count); grouped only under --quick.

--results and --plot draw bytes per image (from a split_rd results.json)
against edge time (from these rows): `benchmarks.edge_report`, which
also prints the tables and says what --json writes.
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
import copy
import io
from pathlib import Path
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from benchmarks import edge_report
from benchmarks.timing import best_time
from experiments import split_rd_eval
from experiments.split_rd_methods import METHODS
from hecsb_jax import entropy
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.data import pretrained
from hecsb_jax.models import hecsb_bottleneck as hb
from hecsb_jax.models.efficientnet_lite import EfficientNetLite0

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared/data"
IMPLS = ("shifted_sum", "grouped")
QUICK_REPEATS = 2
WHOLE = edge_report.WHOLE
SHALLOW = "HECS-B head, shallow encoder"
# Edge functions without the teacher's depthwise convolutions.
NO_DEPTHWISE = ("svb", "neural_codec")
# What each learned method's edge row is called.
EDGE_PARTS = {
    "hecsb": "HECS-B head, teacher prefix",
    "svb": "SVB encoder",
    "crbq": "CR+BQ prefix + reduction",
    "neural_codec": "Ballé 2018 analysis g_a",
}


# ------------------------------------------------------------- parameters


def param_count(module: nnx.Module) -> int:
  return sum(int(np.prod(v.shape))
             for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


def prefix_params(net: EfficientNetLite0, split: str) -> int:
  """Parameters of the stem and blocks up to ``split`` (a block name)."""
  stop = net.split_points.index(split)  # split_points[0] is "stem"
  return param_count(net.stem) + sum(
      param_count(block) for block in list(net.blocks)[:stop])


def acquisition_params(acquisition: nnx.Module) -> int:
  # A TeacherPrefix holds a whole copy of the teacher but runs only the
  # layers up to the split.
  if isinstance(acquisition, hb.TeacherPrefix):
    return prefix_params(acquisition.backbone, acquisition.until)
  return param_count(acquisition)


def edge_params(name: str, saved: nnx.Module) -> int:
  """Parameters of what runs on the edge for METHODS[name]'s ``saved``
  module: no decoder, tail, synthesis transform or prior (the prior's CDF
  tables are data, not parameters)."""
  if name == "neural_codec":
    return param_count(saved.g_a)
  b = saved.bottleneck
  if name == "svb":
    return param_count(b.encoder)
  head = b.measurement if name == "hecsb" else b.reduction
  return acquisition_params(b.acquisition) + param_count(head)


# --------------------------------------------------------------- clocks


def teacher(data_dir: Path, impl: str) -> tuple[nnx.Module, str]:
  path = data_dir / pretrained.EFFICIENTNET_LITE0_NPZ
  if path.is_file():
    model = pretrained.load_efficientnet_lite0(path)
    weights = "pretrained"
  else:
    model = EfficientNetLite0(rngs=nnx.Rngs(0))
    weights = "random"
  model.eval()
  model.set_depthwise_impl(impl)
  return model, weights


def edge_image(data_dir: Path) -> tuple[np.ndarray, str]:
  """[224, 224, 3] uint8: a real photo where there is one (the codecs'
  times and sizes depend on content; noise is their worst case)."""
  folder = data_dir / "imagenet_samples" / "images"
  files = sorted(folder.glob("*.JPEG")) if folder.is_dir() else []
  if files:
    return imagenet_folder.decode_center_crop(files[0]), files[0].name
  coarse = np.random.default_rng(0).integers(0, 256, (14, 14, 3), np.uint8)
  image = Image.fromarray(coarse).resize((224, 224),
                                         Image.Resampling.BICUBIC)
  return np.asarray(image), "smooth random image"


def host_seconds(fn, repeats: int) -> float:
  """Best wall time of ``fn()`` (host code: coder, Pillow, unpacking)."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def compiled_cost(compiled) -> dict:
  """FLOPs and memory (module docstring) of one compiled call."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
    analysis = analysis[0]
  flops = analysis.get("flops")  # None: unknown, not invented
  cost = {"flops": None if flops is None else float(flops), "memory": None}
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats is not None:
    parts = {"argument_bytes": int(stats.argument_size_in_bytes),
             "output_bytes": int(stats.output_size_in_bytes),
             "temp_bytes": int(stats.temp_size_in_bytes)}
    cost["memory"] = {**parts, "total_bytes": sum(parts.values())}
  return cost


def measure(fn, module, args: tuple, repeats: int) -> tuple[dict, object]:
  """``fn(module, *args)`` compiled once: its cost, best-of-``repeats``
  milliseconds, and its output (numpy)."""
  graphdef, state = nnx.split(module)
  compiled = jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a)).lower(
      state, *args).compile()
  call = lambda: compiled(state, *args)
  stats = compiled_cost(compiled)
  stats["ms"] = best_time(call, repeats) * 1e3
  return stats, jax.tree.map(np.asarray, call())


def merge(old: dict | None, new: dict | None, impl: str) -> dict | None:
  """Two measurements of one function, depthwise convolutions done two
  ways: the faster's time and memory, the grouped one's FLOPs (the
  conventional count; shifted sums add operations of their own)."""
  if new is None:
    return old
  new.setdefault("impl", impl)
  if old is None:
    return new
  best = new if new["ms"] < old["ms"] else old
  return {**best, "flops": (new if impl == "grouped" else old)["flops"]}


# ---------------------------------------------------------------- rows


def server_fn(method, config):
  """The server's jitted part: symbols -> logits."""
  if method.split:
    return lambda student, s: student.logits_from_symbols(s)
  norm = pipeline.normalization(config.backbone)
  mean, std = jnp.asarray(norm.mean), jnp.asarray(norm.std)

  def codec_then_teacher(pair, s):
    codec, net = pair
    # `images_from_unit` inside the jit: the decoded image as uint8 values.
    image = jnp.round(codec.decode_symbols(s) * 255.0)
    return net((image - mean) / std)

  return codec_then_teacher


def learned_row(name: str, net, config, image: np.ndarray, repeats: int,
                time_edge: bool) -> dict:
  """One learned method at its first value: edge, payload, server.

  Args:
    name: a key of METHODS.
    net: the teacher (its depthwise implementation set).
    config: split_rd config.
    image: [224, 224, 3] uint8.
    repeats: best of this many calls.
    time_edge: False: the edge's time does not depend on the teacher's
      depthwise implementation and is already known; ``edge`` is None.

  Returns:
    A row (`edge_report` says what it holds).
  """
  method = METHODS[name]
  value = method.values(config)[0]
  model = method.build(net, config, value)
  model.eval()
  saved = method.saved(model)
  x = jnp.asarray(pipeline.normalize(image[None], method.input_norm(config)))
  edge_stats, symbols = measure(lambda m, x: m.edge_symbols(x), saved, (x,),
                                repeats if time_edge else 1)
  if name in NO_DEPTHWISE:
    edge_stats["impl"] = None
  tables = None
  if method.entropy_coded:
    h = config.hecsb
    tables = entropy.build_tables(method.entropy_model(model),
                                  precision=h.table_precision,
                                  tail_mass=h.table_tail_mass)
  payloads = method.to_bytes(symbols, tables)
  coder_ms = host_seconds(lambda: method.to_bytes(symbols, tables),
                          repeats) * 1e3
  decode_ms = host_seconds(lambda: method.from_bytes(payloads, tables),
                           repeats) * 1e3
  received = jax.tree.map(jnp.asarray, method.from_bytes(payloads, tables))
  server_module = saved if method.split else (saved, net)
  fn_stats, _ = measure(server_fn(method, config), server_module,
                        (received,), repeats)
  return {
      "name": EDGE_PARTS[name], "method": name,
      "setting": method.setting(value), "params": edge_params(name, saved),
      "edge": edge_stats if time_edge else None, "coder_ms": coder_ms,
      "bytes": len(payloads[0]),
      "server": {**fn_stats, "decode_ms": decode_ms, "fn_ms": fn_stats["ms"],
                 "ms": decode_ms + fn_stats["ms"]},
  }


def reference_rows(net, config, image: np.ndarray, repeats: int,
                   shallow: bool) -> list[dict]:
  """The whole network, the shallow HECS-B head (if ``shallow``: it has
  no depthwise convolution, one implementation times it), the prefix
  alone."""
  shallow_config = copy.deepcopy(config)
  shallow_config.hecsb.acquisition = "shallow"
  shallow_config.hecsb.train_acquisition = True
  hecsb = METHODS["hecsb"]
  value = hecsb.values(config)[0]
  head = hecsb.saved(hecsb.build(net, shallow_config, value))
  head.eval()
  x = jnp.asarray(pipeline.normalize(
      image[None], pipeline.normalization(config.backbone)))
  parts = [
      (WHOLE, net, lambda m, x: m(x), param_count(net), None),
      (f"teacher prefix alone (to {config.split})", net,
       lambda m, x: m.features(x, until=config.split),
       prefix_params(net, config.split), None)]
  if shallow:
    parts.insert(1, (SHALLOW, head, lambda m, x: m.edge_symbols(x),
                     edge_params("hecsb", head), hecsb.setting(value)))
  rows = []
  for name, module, fn, params, setting in parts:
    stats, _ = measure(fn, module, (x,), repeats)
    if name == SHALLOW:
      stats["impl"] = None
    rows.append({"name": name, "method": None, "setting": setting,
                 "params": params, "edge": stats, "coder_ms": None,
                 "bytes": None, "server": None})
  return rows


def edge_rows(data_dir: Path, config, image: np.ndarray, repeats: int,
              impls: tuple[str, ...]) -> tuple[list[dict], str]:
  """Every edge row, each part at its faster depthwise implementation."""
  rows, weights = {}, "random"
  for impl in impls:
    net, weights = teacher(data_dir, impl)
    first = impl == impls[0]
    new = reference_rows(net, config, image, repeats, shallow=first)
    for name in METHODS:
      new.append(learned_row(name, net, config, image, repeats,
                             time_edge=first or name not in NO_DEPTHWISE))
    for row in new:
      old = rows.setdefault(row["name"], {**row, "edge": None,
                                          "server": None})
      for part in ("edge", "server"):
        old[part] = merge(old[part], row[part], impl)
  rows = list(rows.values())
  # The reference first, the methods in METHODS's order, then the rest.
  order = [WHOLE] + [EDGE_PARTS[m] for m in METHODS]
  rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order
            else len(order))
  return rows, weights


def codec_rows(settings: dict, image: np.ndarray, whole_ms: float,
               repeats: int) -> list[dict]:
  """Pillow encode (edge) and decode + the whole teacher (server) per
  image-codec setting."""
  pil = Image.fromarray(image)
  rows = []
  for method, entries in settings.items():
    for fmt, setting, save_args in entries:
      def encode(fmt=fmt, save_args=save_args):
        buf = io.BytesIO()
        pil.save(buf, format=fmt, **save_args)
        return buf.getvalue()

      data = encode()

      def decode(data=data):
        with Image.open(io.BytesIO(data)) as img:
          return np.asarray(img.convert("RGB"))

      encode_ms = host_seconds(encode, repeats) * 1e3
      decode_ms = host_seconds(decode, repeats) * 1e3
      rows.append({
          "name": f"Pillow {fmt} {setting}", "method": method,
          "setting": setting, "params": 0,
          "edge": {"ms": encode_ms, "flops": None, "memory": None},
          "coder_ms": None, "bytes": len(data),
          "server": {"decode_ms": decode_ms, "fn_ms": whole_ms,
                     "ms": decode_ms + whole_ms}})
  return rows


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--config", choices=("full", "quick"), default="full",
                 help="split_rd config whose method sizes are measured"
                 " (with --results: the one its run used)")
  p.add_argument("--quick", action="store_true",
                 help=f"smoke run: {QUICK_REPEATS} repeats, grouped"
                 " depthwise convolutions only (not a measurement)")
  p.add_argument("--json", type=Path, help="write every row here")
  p.add_argument("--results", type=Path,
                 help="a split_rd results.json, for --plot")
  p.add_argument("--plot", type=Path,
                 help="bytes per image vs edge time (needs --results)")
  args = p.parse_args(argv)
  if (args.results is None) != (args.plot is None):
    p.error("--results and --plot go together")
  repeats = QUICK_REPEATS if args.quick else args.repeats
  impls = ("grouped",) if args.quick else IMPLS
  config = split_rd_config.get_config(args.config)
  results = None if args.results is None else edge_report.read_results(
      args.results)
  image, image_name = edge_image(args.data_dir)
  rows, weights = edge_rows(args.data_dir, config, image, repeats, impls)
  settings = split_rd_eval.codec_settings(
      edge_report.with_result_qualities(config, results))
  rows += codec_rows(settings, image, rows[0]["edge"]["ms"], repeats)
  cores = len(os.sched_getaffinity(0)) if hasattr(
      os, "sched_getaffinity") else "?"
  header = (f"device: {jax.devices()[0].device_kind}, {cores} core(s) for"
            f" this process, batch 1, 224x224 ({image_name}), {weights}"
            f" EfficientNet-Lite0 weights, best of {repeats}")
  print(header)
  edge_report.print_edge_table(rows)
  print()
  edge_report.print_server_table(rows)
  edge_report.print_summary(rows)
  if args.json is not None:
    edge_report.write_json(args.json, rows, header=header,
                           config=args.config, repeats=repeats)
  if args.plot is not None:
    missing = edge_report.plot_bytes_vs_edge_time(results, rows, args.plot)
    for method, setting in missing:
      print(f"plot: no edge time for {method} {setting}, left out")
  return rows


if __name__ == "__main__":
  main()
