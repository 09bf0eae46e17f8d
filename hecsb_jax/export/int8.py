"""The int8 export: a model of its own beside the float export.

    DIR/                 the float export (folder.export_model)
    DIR/int8/            the int8 export, the same layout:
      head_int8.tflite   `quantize.quantize_head` of DIR/head.tflite,
                         calibrated on `dev` images
      tables.npz         re-estimated from the int8 head's own symbols on
                         those images (`symbol_tables`)
      head_float.stablehlo  a copy of the float StableHLO the int8 head
                         was quantized from (the manifest names one; there
                         is no int8 StableHLO)
      manifest.json      model "<name>_int8", its own model id

Quantizing moves symbols (some by one), so the trained prior's tables no
longer describe them; the int8 head therefore gets its own tables and
with them its own model id. The edge client reads DIR/int8 as any export;
the server decodes its payloads with the float tail and these tables
(`python -m hecsb_jax.serve CHECKPOINT --tables DIR/int8/tables.npz`).
Calibration uses the `dev` split only; holdout stays for measurement.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
import os
from pathlib import Path
import shutil
import time

import numpy as np

from hecsb_jax import coding
from hecsb_jax.data import imagenet_folder
from hecsb_jax.edge import head as edge_head
from hecsb_jax.edge import manifest as manifest_lib
from hecsb_jax.edge import preprocess
from hecsb_jax.export import quantize
from hecsb_jax.export import symbol_tables

SUBDIR = "int8"
FILES = manifest_lib.Files(tflite="head_int8.tflite",
                           stablehlo="head_float.stablehlo")
SUFFIX = "_int8"
CALIBRATION_SPLIT = "dev"
DEFAULT_CALIBRATION_IMAGES = 200


class CalibrationError(ValueError):
  """Calibration images that cannot be had; the message says why."""


def calibration_examples(data_dir: str | os.PathLike,
                         count: int) -> list[imagenet_folder.Example]:
  """The first ``count`` images of the dev split under ``data_dir``.

  Raises:
    FileNotFoundError: no imagenet_samples under ``data_dir`` (named).
    DataFormatError: its CSVs are malformed (hecsb_jax.data.errors).
    CalibrationError: count < 1 or more than the split holds.
  """
  examples = imagenet_folder.read_split(
      Path(data_dir) / "imagenet_samples", CALIBRATION_SPLIT)
  if not 1 <= count <= len(examples):
    raise CalibrationError(
        f"--calibration-images must be in 1..{len(examples)} (the"
        f" {CALIBRATION_SPLIT} split of {data_dir}), got {count}")
  return examples[:count]


def calibration_pixels(examples, spec: manifest_lib.InputSpec
                       ) -> list[np.ndarray]:
  """Head inputs of ``examples``: float32 [1, S, S, 3], the export's crop.
  """
  return [preprocess.preprocess_file(e.path, spec.resize, spec.size,
                                     spec.interpolation
                                     )[None].astype(np.float32)
          for e in examples]


def export_int8(float_dir: str | os.PathLike, examples, *,
                out_dir: str | os.PathLike | None = None,
                log=print) -> dict:
  """Writes the int8 export of the float export ``float_dir``.

  Args:
    float_dir: a finished float export (manifest.json, head.tflite).
    examples: the calibration images (`calibration_examples`), also the
      images the tables are estimated on.
    out_dir: where to write; default ``float_dir``/int8.
    log: progress lines (None for silence).

  Returns:
    the int8 manifest dict, plus "seconds".

  Raises:
    manifest_lib.ManifestError: ``float_dir`` is not a finished export.
    quantize.QuantizationError: the quantizer failed.
  """
  log = log or (lambda *_: None)
  source = manifest_lib.load_manifest(float_dir)
  pixels = calibration_pixels(examples, source.input)
  out_dir = Path(out_dir) if out_dir is not None else Path(float_dir) / SUBDIR
  out_dir.mkdir(parents=True, exist_ok=True)
  # An unfinished int8 export must not look finished (manifest last).
  (out_dir / manifest_lib.FILENAME).unlink(missing_ok=True)
  seconds = {}

  t = time.perf_counter()
  head_path = out_dir / FILES.tflite
  head_path.write_bytes(quantize.quantize_head(
      source.path("tflite").read_bytes(), pixels))
  seconds["quantize"] = time.perf_counter() - t
  log(f"{head_path}: int8 head from {len(pixels)} {CALIBRATION_SPLIT}"
      f" images in {seconds['quantize']:.1f} s")

  # Its own symbols, through the edge's own runner (what a device runs).
  t = time.perf_counter()
  head = edge_head.Head(head_path, (1, source.input.size,
                                    source.input.size, 3),
                        (1, *source.symbols.shape))
  symbols = np.concatenate([head(x) for x in pixels])
  tables = symbol_tables.tables_from_symbols(symbols)
  for i in range(len(symbols)):  # every calibration image round-trips
    got = coding.decompress(coding.compress(symbols[i:i + 1], tables),
                            tables)
    if not np.array_equal(got, symbols[i:i + 1]):
      raise quantize.QuantizationError(
          f"image {i}: symbols do not survive coding with the int8 tables")
  tables.save_npz(out_dir / FILES.tables)
  shutil.copyfile(source.path("stablehlo"), out_dir / FILES.stablehlo)
  seconds["tables"] = time.perf_counter() - t

  versions = dict(source.versions)
  try:
    versions["ai-edge-quantizer"] = metadata.version("ai-edge-quantizer")
  except metadata.PackageNotFoundError:
    versions["ai-edge-quantizer"] = None
  manifest = dataclasses.replace(
      source, model=source.model + SUFFIX,
      model_id=coding.model_id(tables).hex(), files=FILES, versions=versions,
      training=dict(source.training, int8={
          "quantized_from": {"model": source.model,
                             "model_id": source.model_id},
          "recipe": quantize.RECIPE,
          "calibration": {"split": CALIBRATION_SPLIT,
                          "images": len(pixels)},
          "tables": "per-channel histograms of this head's symbols on the"
                    " calibration images (pseudo-count"
                    f" {symbol_tables.PSEUDO_COUNT}, escape mass"
                    f" {symbol_tables.TAIL_MASS})",
      }))
  manifest_lib.Manifest.from_dict(manifest.to_dict())
  path = manifest.save(out_dir)
  log(f"{path}: model {manifest.model}, id {manifest.model_id}")
  return dict(manifest.to_dict(), seconds=seconds)
