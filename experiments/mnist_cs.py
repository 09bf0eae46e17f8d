r"""Compressed sensing on MNIST and Omniglot: HECS-B vs LASSO, CSGM-VAE, PCA.

    python -m experiments.mnist_cs --data-dir ../shared/data
    python -m experiments.mnist_cs --data-dir ../shared/data --quick

Writes under --out (default runs/mnist_cs): results.json, results.md,
error_vs_m.png, reconstructions.png, and the training checkpoints (ckpt/),
from which an interrupted run resumes. A checkpoint made with other
settings (another --seed, --epochs, --quick, other data) is refused, not
reused: pick another --out, or pass --overwrite to retrain from scratch.

Options and data are checked before any training; a bad one ends the run
with a one-line `error: ...` and exit status 2 (--debug shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from experiments import cs_report
from experiments.cli_errors import one_line_errors
from experiments.cs_comparison import run_dataset
from hecsb_jax.configs import mnist_cs as mnist_cs_config
from hecsb_jax.data import DataFormatError
from hecsb_jax.data import IMAGE_SHAPE
from hecsb_jax.data import load_dataset
from hecsb_jax.train.checkpoint import CheckpointMismatchError

SHOWN_MS = (2, 10, 50)


def _parse_ms(text: str) -> tuple[int, ...]:
  try:
    ms = tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"--m takes integers like 2,5,10: {text}")
  if not ms or min(ms) < 1:
    raise argparse.ArgumentTypeError(f"--m needs positive integers: {text}")
  return ms


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m experiments.mnist_cs",
      description=__doc__.split("\n\n")[0],
  )
  p.add_argument("--dataset", choices=("mnist", "omniglot", "all"),
                 default="all")
  p.add_argument("--m", type=_parse_ms, default=None,
                 help="measurement counts, comma-separated "
                 f"(default {','.join(map(str, mnist_cs_config.MEASUREMENTS))})")
  p.add_argument("--data-dir", default=None,
                 help="folder holding mnist/ (four IDX files) and omniglot/ "
                 "(npz), e.g. ../shared/data; with --source tfds, the tfds "
                 "data dir")
  p.add_argument("--source", choices=("local", "tfds"), default="local",
                 help="local files, or tensorflow-datasets (downloads on "
                 "first use)")
  p.add_argument("--epochs", type=int, default=None,
                 help="training epochs of the UAE and the VAE")
  p.add_argument("--seed", type=int, default=None)
  p.add_argument("--eval-images", type=int, default=None,
                 help="size of the fixed test subset every method is "
                 "scored on")
  p.add_argument("--quick", action="store_true",
                 help="a few-minute run that still trains every method")
  p.add_argument("--out", default=os.path.join("runs", "mnist_cs"))
  p.add_argument("--overwrite", action="store_true",
                 help="delete the checkpoints under --out first (instead "
                 "of refusing ones made with other settings)")
  p.add_argument("--no-progress", action="store_true")
  p.add_argument("--debug", action="store_true",
                 help="on an error, show the whole traceback")
  args = p.parse_args(argv)
  if args.source == "local" and args.data_dir is None:
    p.error("--data-dir is required with --source local (the folder that "
            "holds mnist/ and omniglot/, e.g. ../shared/data)")
  num_pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
  if args.m is not None and max(args.m) > num_pixels:
    p.error(f"--m {max(args.m)} is more measurements than the {num_pixels}"
            " pixels of an image")
  for name in ("epochs", "eval_images"):
    value = getattr(args, name)
    if value is not None and value < 1:
      p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
  return args


def build_config(args):
  config = mnist_cs_config.get_config("quick" if args.quick else None)
  if args.dataset != "all":
    config.datasets = (args.dataset,)
  if args.m is not None:
    config.measurements = args.m
  if args.epochs is not None:
    config.uae.epochs = args.epochs
    config.vae.epochs = args.epochs
  if args.seed is not None:
    config.seed = args.seed
  if args.eval_images is not None:
    config.eval_images = args.eval_images
  config.lock()
  return config


def run(args: argparse.Namespace, argv_text: str) -> dict:
  """The experiment; raises on bad data or stale checkpoints."""
  config = build_config(args)
  # Every dataset is read (and checked) before anything is trained.
  datasets = [load_dataset(name, args.data_dir, source=args.source)
              for name in config.datasets]
  if args.overwrite:
    shutil.rmtree(os.path.join(args.out, "ckpt"), ignore_errors=True)
  os.makedirs(args.out, exist_ok=True)
  print(f"config:\n{config}", flush=True)

  results, shown, recons = {}, {}, {}
  started = time.perf_counter()
  for ds in datasets:
    run = run_dataset(ds, config, os.path.join(args.out, "ckpt", ds.name),
                      progress=not args.no_progress)
    results[ds.name] = run.scores
    shown[ds.name] = run.shown
    recons[ds.name] = run.reconstructions
    with open(os.path.join(args.out, "results.json"), "w") as f:
      json.dump(results, f, indent=2)

  minutes = (time.perf_counter() - started) / 60
  notes = (
      f"Command: `python -m experiments.mnist_cs {argv_text}`"
      f" — {minutes:.1f} min. sigma = {config.noise_std}; UAE/VAE "
      f"{config.uae.epochs}/{config.vae.epochs} epochs"
      f" ({config.uae.schedule} learning rate); UAE weight decay "
      f"per m from {tuple(config.uae.weight_decay_grid)} on validation "
      f"l2; CSGM {config.csgm.num_restarts} restarts x "
      f"{config.csgm.num_steps} steps."
  )
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(cs_report.results_markdown(results, notes))
  cs_report.plot_error_vs_m(results, os.path.join(args.out, "error_vs_m.png"))
  ms = [m for m in SHOWN_MS if m in config.measurements] or list(
      config.measurements[:3])
  cs_report.plot_reconstructions(
      shown, recons, ms, os.path.join(args.out, "reconstructions.png"))
  print(cs_report.results_markdown(results, notes))
  print(f"wrote {args.out}/results.json, results.md, error_vs_m.png, "
        "reconstructions.png")
  return results


def main(argv=None) -> dict:
  """The command line: errors end in one line and exit status 2."""
  args = parse_args(argv)
  argv_text = " ".join(sys.argv[1:] if argv is None else argv)

  def hint(e: BaseException) -> str:
    if isinstance(e, CheckpointMismatchError):
      return (f". Use another --out, or --overwrite to delete"
              f" {os.path.join(args.out, 'ckpt')} and retrain")
    return ""

  with one_line_errors((OSError, DataFormatError, CheckpointMismatchError),
                       debug=args.debug, hint=hint):
    return run(args, argv_text)


if __name__ == "__main__":
  main()
