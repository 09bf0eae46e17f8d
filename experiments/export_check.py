"""Do the exported heads reproduce the JAX head? On real images:

    python -m experiments.export_check runs/export/hecsb_beta0.0003 \\
        runs/split_rd_v2/ckpt/hecsb_beta0.0003 --data-dir ../shared/data \\
        --split holdout --out docs/results/export/

For every image of the split (the evaluation crop, `resize_center_crop`):
the JAX head (`module.edge_symbols` of the normalized crop, the library
path that training and evaluation use), the deserialized StableHLO
artifact (`jax.export.deserialize(...).call`) and the .tflite head under
`ai_edge_litert`'s Interpreter (num_threads=1). Each variant's symbols are
compared with JAX's (equal; off by one, i.e. rounding at a .5 boundary;
worse), coded with `coding.compress` (bytes per image), and sent through
the server (`logits_from_symbols`): top-1 against JAX's and the label.
Writes agreement.json and agreement.md to --out. About 3 minutes for the
200 holdout images on 2 busy cores.

With --int8 it measures the int8 export (EXPORT_DIR/int8, written by
`python -m hecsb_jax.export ... --int8`) instead, against the float
.tflite head:

    python -m experiments.export_check runs/export_int8/hecsb_beta0.0003 \
        runs/split_rd_v2/ckpt/hecsb_beta0.0003 --data-dir ../shared/data \
        --split holdout --int8 --out docs/results/export/

per image: both .tflite heads (1 thread each, timed alternately), the
int8 symbols against the float head's, each coded with its own export's
tables (`coding.compress` lengths), each through the float tail (the
server decodes int8 payloads with the int8 tables and the float tail).
A control separates the two changes: the float head's symbols coded with
tables estimated the way the int8 tables are (`symbol_tables` on the float
head's symbols of the same dev calibration images). Writes int8.json and
int8.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import platform
import sys
import time

import jax
import numpy as np

from hecsb_jax import coding
from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.edge import manifest as manifest_lib
from hecsb_jax.export import stablehlo
from hecsb_jax.export import tflite
from hecsb_jax.train import saved_model

VARIANTS = ("jax", "stablehlo", "tflite")


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m experiments.export_check",
                              description=__doc__.splitlines()[0])
  p.add_argument("export_dir", help="folder written by hecsb_jax.export")
  p.add_argument("checkpoint", help="the trained model folder it came from")
  p.add_argument("--data-dir", default="../shared/data",
                 help="holds imagenet_samples/")
  p.add_argument("--split", default="holdout",
                 choices=("dev", "holdout", "all"))
  p.add_argument("--limit", type=int, default=None,
                 help="only the first N images (a smoke run)")
  p.add_argument("--out", required=True, help="where agreement.json/.md go")
  p.add_argument("--int8", action="store_true",
                 help="measure EXPORT_DIR/int8 against the float .tflite"
                 " head instead; writes int8.json/.md")
  return p.parse_args(argv)


class Heads:
  """The three heads of one model, each: uint8 crop [S, S, 3] -> int32
  symbols [1, h, w, m], timed per call."""

  def __init__(self, model: saved_model.SavedModel,
               manifest: manifest_lib.Manifest):
    from ai_edge_litert.interpreter import Interpreter

    self.model = model
    self._jax = jax.jit(model.module.edge_symbols)
    # jit: `Exported.call` alone retraces on every call.
    self._hlo = jax.jit(stablehlo.load(manifest.path("stablehlo")).call)
    interpreter = Interpreter(model_path=str(manifest.path("tflite")),
                              num_threads=1)
    self._tfl = interpreter.get_signature_runner(tflite.SIGNATURE)
    self.seconds = {v: [] for v in VARIANTS}

  def __call__(self, crop: np.ndarray) -> dict[str, np.ndarray]:
    pixels = crop[None].astype(np.float32)  # the head's input contract
    runs = {
        "jax": lambda: self._jax(self.model.normalize(crop[None])),
        "stablehlo": lambda: self._hlo(pixels),
        "tflite": lambda: self._tfl(**{tflite.INPUT_NAME: pixels})[
            tflite.OUTPUT_NAME],
    }
    out = {}
    for name, run in runs.items():
      t = time.perf_counter()
      out[name] = np.asarray(jax.block_until_ready(run()))
      self.seconds[name].append(time.perf_counter() - t)
    return out


def _compare(reference: np.ndarray, got: np.ndarray) -> dict:
  diff = np.abs(got.astype(np.int64) - reference)
  return {"symbols": int(diff.size), "equal": int((diff == 0).sum()),
          "off_by_one": int((diff == 1).sum()),
          "worse": int((diff > 1).sum()), "max_abs_diff": int(diff.max())}


def check(model, manifest, examples, log=print) -> dict:
  """Runs every head on ``examples``; returns the agreement record."""
  heads = Heads(model, manifest)
  logits_fn = jax.jit(model.module.logits_from_symbols)
  spec = manifest.input
  counts = {v: {"symbols": 0, "equal": 0, "off_by_one": 0, "worse": 0,
                "max_abs_diff": 0} for v in VARIANTS[1:]}
  num_bytes = {v: [] for v in VARIANTS}
  top1 = {v: [] for v in VARIANTS}
  images_differing = {v: 0 for v in VARIANTS[1:]}
  for i, example in enumerate(examples):
    crop = pipeline.resize_center_crop(
        pipeline.decode_image(example.path), spec.resize, spec.size,
        spec.interpolation)
    symbols = heads(crop)
    for v in VARIANTS:
      s = symbols[v]
      if s.shape != (1, *manifest.symbols.shape) or s.dtype != np.int32:
        raise ValueError(f"{v} head returned {s.dtype} {s.shape}, manifest"
                         f" says int32 {(1, *manifest.symbols.shape)}")
      num_bytes[v].append(len(coding.compress(s, model.tables)))
      top1[v].append(int(np.argmax(np.asarray(logits_fn(s))[0])))
      if v != "jax":
        c = _compare(symbols["jax"], s)
        images_differing[v] += c["equal"] < c["symbols"]
        for k in ("symbols", "equal", "off_by_one", "worse"):
          counts[v][k] += c[k]
        counts[v]["max_abs_diff"] = max(counts[v]["max_abs_diff"],
                                        c["max_abs_diff"])
    if log and (i + 1) % 50 == 0:
      log(f"{i + 1}/{len(examples)} images")
  labels = np.array([e.label for e in examples])
  record = {"variants": {}}
  for v in VARIANTS:
    t = np.array(top1[v])
    # The first call of each head compiles or allocates: left out.
    secs = np.array(heads.seconds[v][1:] or heads.seconds[v])
    entry = {
        "bytes_per_image_mean": float(np.mean(num_bytes[v])),
        "top1_accuracy": float(np.mean(t == labels)),
        "top1_equal_to_jax": int((t == np.array(top1["jax"])).sum()),
        "head_ms_median": float(np.median(secs) * 1e3),
        "byte_count_equal_to_jax": int(sum(
            a == b for a, b in zip(num_bytes[v], num_bytes["jax"]))),
    }
    if v != "jax":
      c = counts[v]
      entry.update(c, equal_fraction=c["equal"] / c["symbols"],
                   images_with_any_difference=images_differing[v])
    record["variants"][v] = entry
  return record


def check_int8(model, manifest, int8_manifest, examples, calibration,
               log=print) -> dict:
  """The int8 head against the float .tflite head on ``examples``.

  Args:
    model: the trained model (its tail is the server's).
    manifest, int8_manifest: the float export and its int8 export.
    examples: the measured images (holdout).
    calibration: the dev images the int8 export was calibrated on (the
      control's tables are estimated on them).
  """
  from hecsb_jax.edge import head as edge_head
  from hecsb_jax.export import int8 as int8_lib
  from hecsb_jax.export import symbol_tables

  heads = {"float": edge_head.Head.from_manifest(manifest, num_threads=1),
           "int8": edge_head.Head.from_manifest(int8_manifest,
                                                num_threads=1)}
  int8_tables = coding.load_tables(int8_manifest.path("tables"))
  if coding.model_id(int8_tables).hex() != int8_manifest.model_id:
    raise ValueError(f"{int8_manifest.path('tables')}: not the tables of"
                     f" model id {int8_manifest.model_id}")
  # The control: the float head's own histogram tables on the same dev
  # images, so the int8 row's bytes separate quantization from tables.
  dev = np.concatenate([heads["float"](x) for x in
                        int8_lib.calibration_pixels(calibration,
                                                    manifest.input)])
  control_tables = symbol_tables.tables_from_symbols(dev)
  logits_fn = jax.jit(model.module.logits_from_symbols)
  spec = manifest.input
  seconds = {k: [] for k in heads}
  rows = {"float": [], "float_histogram_tables": [], "int8": []}
  agree = {"symbols": 0, "equal": 0, "off_by_one": 0, "worse": 0,
           "max_abs_diff": 0}
  for i, example in enumerate(examples):
    pixels = int8_lib.calibration_pixels([example], spec)[0]
    # Alternate which head runs first: neither always gets a warm cache.
    order = ("float", "int8") if i % 2 == 0 else ("int8", "float")
    symbols = {}
    for name in order:
      t = time.perf_counter()
      symbols[name] = heads[name](pixels)
      seconds[name].append(time.perf_counter() - t)
    c = _compare(symbols["float"], symbols["int8"])
    for k in ("symbols", "equal", "off_by_one", "worse"):
      agree[k] += c[k]
    agree["max_abs_diff"] = max(agree["max_abs_diff"], c["max_abs_diff"])
    for row, s, tables in (
        ("float", symbols["float"], model.tables),
        ("float_histogram_tables", symbols["float"], control_tables),
        ("int8", symbols["int8"], int8_tables)):
      data = coding.compress(s, tables)
      if row == "int8":  # what the server decodes
        s = coding.decompress(data, int8_tables)
        if not np.array_equal(s, symbols["int8"]):
          raise AssertionError(f"{example.path}: int8 round trip differs")
      rows[row].append((len(data), int(np.argmax(np.asarray(
          logits_fn(s))[0]))))
    if log and (i + 1) % 50 == 0:
      log(f"{i + 1}/{len(examples)} images")
  labels = np.array([e.label for e in examples])
  float_top1 = np.array([t for _, t in rows["float"]])
  record = {"variants": {}}
  for row, values in rows.items():
    nbytes = np.array([b for b, _ in values])
    top1 = np.array([t for _, t in values])
    head = "int8" if row == "int8" else "float"
    record["variants"][row] = {
        "model_id": (int8_manifest.model_id if row == "int8" else
                     manifest.model_id if row == "float" else
                     coding.model_id(control_tables).hex()),
        "bytes_per_image_mean": float(nbytes.mean()),
        "top1_accuracy": float(np.mean(top1 == labels)),
        "top1_equal_to_float": int((top1 == float_top1).sum()),
        # The first call of each head allocates: left out.
        "head_ms_median": float(np.median(seconds[head][1:]) * 1e3),
        "head_file_bytes": heads[head].path.stat().st_size,
    }
  record["int8_vs_float_symbols"] = dict(
      agree, equal_fraction=agree["equal"] / agree["symbols"])
  return record


def _markdown_int8(r: dict) -> str:
  n = r["images"]
  v = r["variants"]
  a = r["int8_vs_float_symbols"]
  names = {"float": "float .tflite, trained tables (prior)",
           "float_histogram_tables": "float .tflite, histogram tables"
                                     " (control)",
           "int8": "int8 .tflite, its own tables"}
  lines = [
      f"# int8 head: {r['int8_model']} ({r['split']}, {n} images)", "",
      f"`{r['int8_dir']}` (model id `{r['int8_model_id']}`), quantized from"
      f" `{r['export_dir']}` (`{r['model_id']}`) and calibrated on"
      f" {r['calibration_images']} dev images; tail: `{r['checkpoint']}`'s"
      " (the server's). Bytes: `coding.compress` lengths with each row's"
      " tables; top-1 after the float tail. Heads under ai_edge_litert,"
      " num_threads=1, run alternately per image; medians on"
      f" {r['machine']} (shared with other jobs: relative, not a device"
      " benchmark).", "",
      "| head, tables | bytes/image | top-1 acc. | top-1 = float's |"
      " head ms | .tflite bytes |", "|---|---|---|---|---|---|"]
  for row, e in v.items():
    lines.append(
        f"| {names[row]} | {e['bytes_per_image_mean']:.1f} |"
        f" {e['top1_accuracy']:.3f} | {e['top1_equal_to_float']}/{n} |"
        f" {e['head_ms_median']:.2f} | {e['head_file_bytes']} |")
  lines += [
      "", f"int8 symbols equal to the float head's: {a['equal_fraction']:.4f}"
      f" ({a['equal']}/{a['symbols']}); off by one {a['off_by_one']},"
      f" more {a['worse']} (max {a['max_abs_diff']}).", "",
      f"Command: `{r['command']}`", ""]
  return "\n".join(lines)


def _markdown(r: dict) -> str:
  n = r["images"]
  lines = [
      f"# Export agreement: {r['model']} ({r['split']}, {n} images)", "",
      f"Export `{r['export_dir']}` (model id `{r['model_id']}`) against the"
      f" JAX head of `{r['checkpoint']}`. Reference: the JAX head"
      " (`edge_symbols` of the normalized crop). tflite: ai_edge_litert"
      " Interpreter, num_threads=1. Head times are medians per image on"
      f" {r['machine']} (shared with other jobs: relative, not a device"
      " benchmark).", "",
      "| head | equal symbols | off by one | worse | images with a"
      " difference | top-1 = JAX's | top-1 acc. | bytes/image | byte count ="
      " JAX's | head ms |", "|---|---|---|---|---|---|---|---|---|---|"]
  for v, e in r["variants"].items():
    if v == "jax":
      agree = "reference | | | |"
    else:
      agree = (f"{e['equal_fraction']:.7f} ({e['equal']}/{e['symbols']}) |"
               f" {e['off_by_one']} | {e['worse']} |"
               f" {e['images_with_any_difference']}/{n} |")
    lines.append(
        f"| {v} | {agree} {e['top1_equal_to_jax']}/{n} |"
        f" {e['top1_accuracy']:.3f} | {e['bytes_per_image_mean']:.1f} |"
        f" {e['byte_count_equal_to_jax']}/{n} | {e['head_ms_median']:.1f} |")
  lines += ["", f"Command: `{r['command']}`", ""]
  return "\n".join(lines)


def main(argv=None) -> dict:
  args = parse_args(argv)
  manifest = manifest_lib.load_manifest(args.export_dir)
  model = saved_model.load(args.checkpoint)
  model_id = coding.model_id(model.tables).hex()
  if manifest.model_id != model_id:
    raise ValueError(f"{args.export_dir}: model id {manifest.model_id} is"
                     f" not {args.checkpoint}'s ({model_id}); export it"
                     " again")
  examples = imagenet_folder.read_split(
      Path(args.data_dir) / "imagenet_samples", args.split)
  examples = examples[:args.limit] if args.limit else examples
  if args.int8:
    return _main_int8(args, argv, model, manifest, examples)
  t = time.perf_counter()
  record = check(model, manifest, examples)
  record = {
      "model": manifest.model, "model_id": manifest.model_id,
      "export_dir": args.export_dir, "checkpoint": args.checkpoint,
      "split": args.split, "images": len(examples),
      **_run_info(argv, t), "versions": manifest.versions, **record}
  _write(Path(args.out), "agreement", record, _markdown(record))
  return record


def _run_info(argv, started: float) -> dict:
  """Where, how long and by which command a check ran."""
  return {
      "machine": f"{platform.machine()}, {jax.device_count()} JAX CPU"
                 " device(s)",
      "seconds": round(time.perf_counter() - started, 1),
      "command": "python -m experiments.export_check "
                 + " ".join(argv if argv is not None else sys.argv[1:])}


def _write(out: Path, stem: str, record: dict, markdown: str) -> None:
  """OUT/<stem>.json and .md, and the table on stdout."""
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
  (out / f"{stem}.md").write_text(markdown)
  print(markdown)


def _main_int8(args, argv, model, manifest, examples) -> dict:
  from hecsb_jax.export import int8 as int8_lib
  if args.split != "holdout":
    raise ValueError("--int8 measures on holdout: the int8 head and its"
                     " tables were made from dev images")
  int8_dir = Path(args.export_dir) / int8_lib.SUBDIR
  int8_manifest = manifest_lib.load_manifest(int8_dir)
  info = int8_manifest.training.get("int8", {})
  if info.get("quantized_from", {}).get("model_id") != manifest.model_id:
    raise ValueError(f"{int8_dir}: not quantized from {args.export_dir}"
                     f" ({manifest.model_id}); export it again")
  count = int(info["calibration"]["images"])
  calibration = int8_lib.calibration_examples(args.data_dir, count)
  t = time.perf_counter()
  record = check_int8(model, manifest, int8_manifest, examples, calibration)
  record = {
      "model": manifest.model, "model_id": manifest.model_id,
      "int8_model": int8_manifest.model,
      "int8_model_id": int8_manifest.model_id,
      "export_dir": args.export_dir, "int8_dir": str(int8_dir),
      "checkpoint": args.checkpoint, "split": args.split,
      "images": len(examples), "calibration_images": count,
      "quantization": info, **_run_info(argv, t),
      "versions": int8_manifest.versions, **record}
  _write(Path(args.out), "int8", record, _markdown_int8(record))
  return record


if __name__ == "__main__":
  main()
