"""Writes an export folder: the head twice (StableHLO, .tflite), the
coding tables and manifest.json, as hecsb_jax/edge/manifest.py specifies.

The manifest is written here as a plain dict: the deployment layer's
packages may not import each other (tests/test_layering.py), so export
cannot use `hecsb_jax.edge.manifest.Manifest`; tests/test_export.py reads
every written manifest back through `load_manifest`, which holds the two
in step.
"""

from __future__ import annotations

from importlib import metadata
import json
import os
from pathlib import Path
import shutil
import time

from hecsb_jax import coding
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.export import head as head_lib
from hecsb_jax.export import stablehlo
from hecsb_jax.export import tflite
from hecsb_jax.train import saved_model

FILES = {"tflite": "head.tflite", "stablehlo": "head.stablehlo",
         "tables": "tables.npz"}
MANIFEST = "manifest.json"
# Packages whose versions made the artifacts (recorded, not checked).
_VERSIONED = ("hecsb_jax", "jax", "jaxlib", "flax", "numpy",
              "litert-converter", "ai-edge-litert")


def _versions() -> dict:
  found = {}
  for name in _VERSIONED:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      found[name] = None
  return found


def manifest_dict(model: saved_model.SavedModel, symbols_shape) -> dict:
  """The manifest.json object of ``model`` (hecsb_jax/edge/manifest.py)."""
  return {
      "format": 1,
      "model": model.name,
      "method": model.method,
      "setting": {saved_model.METHODS[model.method]: model.value},
      "model_id": coding.model_id(model.tables).hex(),
      "backbone": model.backbone,
      "split": model.split,
      "input": {
          "size": model.image_size,
          # The evaluation crop: shorter side to size * 256 / 224.
          "resize": round(model.image_size * pipeline.RESIZE
                          / pipeline.IMAGE_SIZE),
          "interpolation": model.interpolation,
          "layout": "NHWC", "dtype": "float32", "range": [0, 255],
      },
      "normalization": {"mean": [float(v) for v in model.norm.mean],
                        "std": [float(v) for v in model.norm.std]},
      "symbols": {"shape": [int(n) for n in symbols_shape[1:]],
                  "dtype": "int32"},
      "files": dict(FILES),
      "versions": _versions(),
      "training": {"fingerprint": model.fingerprint,
                   "summary": model.summary},
  }


def export_model(model: saved_model.SavedModel, out_dir: str | os.PathLike,
                 *, log=print) -> dict:
  """Exports ``model``'s head into ``out_dir`` (created; files replaced).

  Args:
    model: a loaded hecsb or svb model (`saved_model.load`).
    out_dir: the export folder.
    log: progress lines (None for silence).

  Returns:
    the manifest dict, plus "seconds" (the time of each step).

  Raises:
    head.ExportError: a method that cannot be exported.
    tflite.ConversionError: the converter refused the head.
  """
  head_lib.check_exportable(model)
  log = log or (lambda *_: None)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  seconds = {}

  t = time.perf_counter()
  exported = stablehlo.export_head(head_lib.head_function(model),
                                   head_lib.input_spec(model))
  (out_dir / FILES["stablehlo"]).write_bytes(exported.serialize())
  seconds["stablehlo"] = time.perf_counter() - t
  log(f"{out_dir / FILES['stablehlo']}: StableHLO head in"
      f" {seconds['stablehlo']:.1f} s")

  t = time.perf_counter()
  (out_dir / FILES["tflite"]).write_bytes(tflite.convert(exported))
  seconds["tflite"] = time.perf_counter() - t
  log(f"{out_dir / FILES['tflite']}: LiteRT head in"
      f" {seconds['tflite']:.1f} s")

  # The tables as trained, never rebuilt: the server's id must match.
  source = model.path / "tables.npz"
  if source.is_file():
    shutil.copyfile(source, out_dir / FILES["tables"])
  else:  # a model built in memory (tests)
    model.tables.save_npz(out_dir / FILES["tables"])
  # The manifest last: a folder without one is an unfinished export, and
  # load_manifest says so.
  manifest = manifest_dict(model, exported.out_avals[0].shape)
  (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
  log(f"{out_dir / MANIFEST}: model {manifest['model']}, id"
      f" {manifest['model_id']}")
  return dict(manifest, seconds=seconds)
