"""python -m hecsb_jax.export CHECKPOINT --out DIR

Exports the edge head of the trained model folder CHECKPOINT (e.g.
runs/split_rd_v2/ckpt/hecsb_beta0.0003, what experiments.split_rd writes)
into DIR: head.stablehlo, head.tflite, tables.npz, manifest.json. About a
minute for EfficientNet-Lite0 at block4 on 2 busy cores. Errors (no model
there, a method that cannot be exported) are one line naming the path.
"""

from __future__ import annotations

import argparse
import sys

from hecsb_jax.export import folder
from hecsb_jax.export import head as head_lib
from hecsb_jax.export import tflite


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m hecsb_jax.export",
      description="Export a trained model's edge head (StableHLO + .tflite"
      " + tables + manifest.json).")
  p.add_argument("checkpoint", help="trained model folder (model/ and"
                 " tables.npz), e.g. runs/split_rd_v2/ckpt/hecsb_beta0.0003")
  p.add_argument("--out", required=True, help="export folder to write")
  return p.parse_args(argv)


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
  return folder.export_model(model, args.out)


def _cli() -> int:
  from hecsb_jax.train import saved_model
  try:
    main()
  # OSError: e.g. --out names a file; its message names the path.
  except (OSError, saved_model.SavedModelError, head_lib.ExportError,
          tflite.ConversionError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(_cli())
