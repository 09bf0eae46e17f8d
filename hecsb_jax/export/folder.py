"""Writes an export folder: the head twice (StableHLO, .tflite), the
coding tables and manifest.json, as hecsb_jax/edge/manifest.py specifies.

The manifest is built as `hecsb_jax.edge.manifest.Manifest`, the one
definition the edge client reads back (the edge package is a JAX-free
layer below export: tests/test_layering.py).
"""

from __future__ import annotations

from importlib import metadata
import os
from pathlib import Path
import shutil
import time

from hecsb_jax import coding
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.edge import manifest as manifest_lib
from hecsb_jax.export import head as head_lib
from hecsb_jax.export import stablehlo
from hecsb_jax.export import tflite
from hecsb_jax.train import saved_model

FILES = manifest_lib.Files().to_dict()
MANIFEST = manifest_lib.FILENAME
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


def build_manifest(model: saved_model.SavedModel,
                   symbols_shape) -> manifest_lib.Manifest:
  """The `Manifest` of ``model``'s export (hecsb_jax/edge/manifest.py).

  Args:
    model: a loaded hecsb or svb model.
    symbols_shape: the head's output shape, [1, h, w, m].

  Raises:
    manifest_lib.ManifestError: a field the edge could not read back (the
      manifest is validated as `load_manifest` will validate it).
  """
  manifest = manifest_lib.Manifest(
      model=model.name,
      method=model.method,
      setting={saved_model.METHODS[model.method]: float(model.value)},
      model_id=coding.model_id(model.tables).hex(),
      backbone=model.backbone,
      split=model.split,
      input=manifest_lib.InputSpec(
          size=model.image_size,
          # The evaluation crop: shorter side to size * 256 / 224.
          resize=round(model.image_size * pipeline.RESIZE
                       / pipeline.IMAGE_SIZE),
          interpolation=model.interpolation),
      normalization=manifest_lib.Normalization(
          tuple(float(v) for v in model.norm.mean),
          tuple(float(v) for v in model.norm.std)),
      symbols=manifest_lib.SymbolSpec(
          tuple(int(n) for n in symbols_shape[1:])),
      versions=_versions(),
      training={"fingerprint": model.fingerprint, "summary": model.summary})
  # Written only if the edge's own reader accepts it.
  manifest_lib.Manifest.from_dict(manifest.to_dict())
  return manifest


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
  manifest = build_manifest(model, exported.out_avals[0].shape)
  path = manifest.save(out_dir)
  log(f"{path}: model {manifest.model}, id {manifest.model_id}")
  return dict(manifest.to_dict(), seconds=seconds)
