r"""Compressed sensing on MNIST and Omniglot: HECS-B vs LASSO, CSGM-VAE, PCA.

    python -m experiments.mnist_cs --data-dir ../shared/data
    python -m experiments.mnist_cs --data-dir ../shared/data --quick

Writes under --out (default runs/mnist_cs): results.json, results.md,
error_vs_m.png, reconstructions.png, and the training checkpoints (ckpt/),
from which an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from hecsb_jax.configs import mnist_cs as mnist_cs_config
from hecsb_jax.data import load_dataset
from hecsb_jax.train import cs_report
from hecsb_jax.train.cs_experiment import run_dataset

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
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)
  if args.source == "local" and args.data_dir is None:
    p.error("--data-dir is required with --source local (the folder that "
            "holds mnist/ and omniglot/, e.g. ../shared/data)")
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


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = build_config(args)
  os.makedirs(args.out, exist_ok=True)
  print(f"config:\n{config}", flush=True)

  results, shown, recons = {}, {}, {}
  started = time.perf_counter()
  for name in config.datasets:
    ds = load_dataset(name, args.data_dir, source=args.source)
    run = run_dataset(ds, config, os.path.join(args.out, "ckpt", name),
                      progress=not args.no_progress)
    results[name] = run.scores
    shown[name] = run.shown
    recons[name] = run.reconstructions
    with open(os.path.join(args.out, "results.json"), "w") as f:
      json.dump(results, f, indent=2)

  minutes = (time.perf_counter() - started) / 60
  notes = (
      f"Command: `python -m experiments.mnist_cs {' '.join(argv or sys.argv[1:])}`"
      f" — {minutes:.1f} min. sigma = {config.noise_std}; UAE/VAE "
      f"{config.uae.epochs}/{config.vae.epochs} epochs; UAE weight decay "
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


if __name__ == "__main__":
  main()
