"""python -m hecsb_jax.export CHECKPOINT --out DIR [--int8 --data-dir D]

Exports the edge head of the trained model folder CHECKPOINT (e.g.
runs/split_rd_v2/ckpt/hecsb_beta0.0003, what experiments.split_rd writes)
into DIR: head.stablehlo, head.tflite, tables.npz, manifest.json. About a
minute for EfficientNet-Lite0 at block4 on 2 busy cores. With --int8, also
DIR/int8/: an int8 post-training-quantized head calibrated on the first
--calibration-images dev images under D/imagenet_samples, with its own
tables and model id (hecsb_jax/export/int8.py). Errors (no model there, a
method that cannot be exported, no data) are one line naming the path.
"""

from __future__ import annotations

import argparse
import sys

from hecsb_jax.export import folder
from hecsb_jax.export import head as head_lib
from hecsb_jax.export import int8 as int8_lib
from hecsb_jax.export import quantize
from hecsb_jax.export import tflite


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m hecsb_jax.export",
      description="Export a trained model's edge head (StableHLO + .tflite"
      " + tables + manifest.json).")
  p.add_argument("checkpoint", help="trained model folder (model/ and"
                 " tables.npz), e.g. runs/split_rd_v2/ckpt/hecsb_beta0.0003")
  p.add_argument("--out", required=True, help="export folder to write")
  p.add_argument("--int8", action="store_true",
                 help="also write OUT/int8: the int8-quantized head, its"
                 " own tables and manifest")
  p.add_argument("--data-dir", help="holds imagenet_samples/ (--int8"
                 " calibrates on its dev split)")
  p.add_argument("--calibration-images", type=int,
                 default=int8_lib.DEFAULT_CALIBRATION_IMAGES,
                 help="dev images for calibration and the int8 tables")
  args = p.parse_args(argv)
  if args.int8 and not args.data_dir:
    p.error("--int8 needs --data-dir (calibration images)")
  return args


def main(argv=None) -> dict:
  """Runs the export; returns the manifest dict (with "seconds")."""
  args = parse_args(argv)
  # Imported after parsing, so that --help does not wait for JAX.
  from hecsb_jax.train import saved_model

  try:
    model = saved_model.load(args.checkpoint)
  except (FileNotFoundError, saved_model.SavedModelError):
    raise
  except Exception as e:  # orbax reports a damaged folder in many types
    raise saved_model.SavedModelError(
        f"{args.checkpoint}: cannot load the trained model"
        f" ({type(e).__name__}: {e})") from e
  if args.int8:  # before the slow export: bad data fails fast
    examples = int8_lib.calibration_examples(args.data_dir,
                                             args.calibration_images)
  result = folder.export_model(model, args.out)
  if args.int8:
    result["int8"] = int8_lib.export_int8(args.out, examples)
  return result


def _cli() -> int:
  from hecsb_jax.data.errors import DataFormatError
  from hecsb_jax.train import saved_model
  try:
    main()
  # OSError: e.g. --out names a file; its message names the path.
  except (OSError, DataFormatError, saved_model.SavedModelError,
          head_lib.ExportError, tflite.ConversionError,
          quantize.QuantizationError, int8_lib.CalibrationError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(_cli())
