r"""Split computing, rate vs accuracy: HECS-B against the learned baselines
(SVB, CR+BQ, a learned image codec) and JPEG, WebP and PNG.

    python -m experiments.split_rd --data-dir ../shared/data --out runs/split_rd
    python -m experiments.split_rd --data-dir ../shared/data --quick
    python -m experiments.split_rd --data-dir ../shared/data \
        --out runs/split_rd --methods svb,jpeg,webp
    python -m experiments.split_rd --data-dir ../shared/data \
        --out runs/split_rd --eval-only --eval-dir MY_IMAGES

Trains every learned model the config names that is not trained yet (one
per setting: β for HECS-B and SVB, stage 1 head distillation, stage 2
knowledge distillation, then the coding tables; CR+BQ's channels k, the
same two stages; the image codec's λ, rate + MSE for as many epochs),
scores every method --methods selects (default all) on the `holdout`
images, and writes under --out
(default runs/split_rd): results.json, results.md, rd_curve.png,
details.json, and the checkpoints (ckpt/). An interrupted run resumes; a
finished one trains nothing. A checkpoint made with other settings
(another --quick, --betas, other data) is refused, not reused: pick
another --out, or pass --overwrite to retrain from scratch.

--tune trains without a quarter of dev (class_index % 5 == 3) and scores
on it instead of holdout, under OUT/tune/: settings are chosen there,
holdout is only reported. --tune-fold K holds out another quarter
(class_index % 5 == K, K in 0..3) under OUT/tune_fold<K>/: a second
opinion on a choice one fold's 200 images cannot settle.

--eval-only scores the finished models of --out, without training, on the
holdout images of --eval-dir (any folder in the imagenet_samples layout:
images/, labels.csv, split.csv) and writes the same files under
OUT/eval/<folder name>/.

--backbone resnet50 runs the paper's scale (hecsb_jax/configs/split_rd.py:
paper): --data-dir is then a tfds data_dir holding the prepared
`imagenet2012` (imagenet_pipeline.prepare_imagenet2012), training streams
its train split and scoring its validation split:

    python -m experiments.split_rd --backbone resnet50 \
        --weights resnet50.safetensors --data-dir ~/tensorflow_datasets \
        --out runs/split_rd_paper

--distributed runs one process per host (or per GPU) of a multi-host job:
each trains on its part of every batch, all take part in checkpoints, and
process 0 alone writes the reports. JAX finds TPU pod slices, SLURM and
Open MPI jobs itself; elsewhere pass --coordinator HOST:PORT
--num-processes N --process-id I to every process.

Options and data are checked before any training; a bad one ends the run
with a one-line `error: ...` and exit status 2 (--debug shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import sys
import time

from experiments.cli_errors import one_line_errors
from hecsb_jax.configs import split_rd as split_rd_config

BACKBONES = ("efficientnet_lite0", "resnet50")
# --acquisition: the edge encoder's network before the measurement, as
# (config.hecsb.acquisition, config.hecsb.train_acquisition).
ACQUISITIONS = {
    "prefix": ("prefix", False),  # the teacher's layers, frozen
    "prefix-finetuned": ("prefix", True),  # trained in stage 1 too
    "shallow": ("shallow", True),  # from scratch (always trained)
}


def tune_subdir(args) -> tuple[str, ...]:
  """Where a --tune run writes, under --out (nothing without --tune)."""
  if not args.tune:
    return ()
  fold = (split_rd_config.FIRST_TUNE_FOLD if args.tune_fold is None
          else args.tune_fold)
  suffix = split_rd_config.tune_fold_suffix(fold)
  return ("tune_" + suffix if suffix else "tune",)


def set_measurement_init(config, value: str | None) -> None:
  """--measurement-init: HECS-B's start, and the decoder's linear path
  that the principal start needs (None: the config's)."""
  if value is not None:
    config.hecsb.measurement_init = value
    config.hecsb.decoder_skip = value == "principal"


def set_encoder(config, acquisition: str | None,
                measurement_init: str | None) -> None:
  """--acquisition and --measurement-init (None: the config's)."""
  if acquisition is not None:
    (config.hecsb.acquisition,
     config.hecsb.train_acquisition) = ACQUISITIONS[acquisition]
  set_measurement_init(config, measurement_init)
  if config.hecsb.acquisition == "shallow":
    # A from-scratch encoder has no principal directions to start at.
    set_measurement_init(config, "random")


def positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer: {text}")
  return value


class OptionError(ValueError):
  """Options that parse but do not fit together with the config."""


def set_measurements(config, value: int | None) -> None:
  """--measurements: HECS-B's m, the coded channels (None: the config's).

  Raises:
    OptionError: the principal start with m above the channels at the
      split (it has only that many directions).
  """
  if value is None:
    return
  h = config.hecsb
  if (h.measurement_init == "principal" and h.acquisition == "prefix"
      and value > config.feature_channels):
    raise OptionError(
        f"--measurements {value}: the principal start has only"
        f" {config.feature_channels} directions at {config.split}; pass"
        f" m <= {config.feature_channels} or --measurement-init random")
  h.num_measurements = value


def _parse_methods(text: str) -> tuple[str, ...]:
  methods = tuple(t.strip() for t in text.split(",") if t.strip())
  unknown = [m for m in methods if m not in split_rd_config.METHODS]
  if not methods or unknown:
    raise argparse.ArgumentTypeError(
        f"--methods takes a comma-separated subset of"
        f" {','.join(split_rd_config.METHODS)}: {text}")
  return methods


def parse_betas(text: str) -> tuple[float, ...]:
  try:
    betas = tuple(float(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"--betas takes numbers like 1e-5,1e-4: {text}") from None
  if not betas or min(betas) <= 0 or len(set(betas)) != len(betas):
    raise argparse.ArgumentTypeError(
        f"--betas needs distinct positive numbers: {text}")
  return betas


# --settings METHOD=V1,V2: the config list each learned method's values
# live in, and their type.
SETTINGS = {
    "hecsb": ("hecsb", "betas", float),
    "svb": ("svb", "betas", float),
    "crbq": ("crbq", "channels", int),
    "neural_codec": ("neural_codec", "lambdas", float),
}


def _parse_settings(text: str) -> tuple[str, tuple]:
  """"svb=1e-5,1e-3" -> ("svb", (1e-05, 0.001))."""
  method, sep, values = text.partition("=")
  method = method.strip()
  if not sep or method not in SETTINGS:
    raise argparse.ArgumentTypeError(
        f"--settings takes METHOD=V1,V2,... with METHOD one of"
        f" {','.join(SETTINGS)}: {text}")
  kind = SETTINGS[method][2]
  try:
    parsed = tuple(kind(t) for t in values.split(",") if t.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"--settings {method}= takes {kind.__name__} values: {text}"
    ) from None
  if not parsed or min(parsed) <= 0 or len(set(parsed)) != len(parsed):
    raise argparse.ArgumentTypeError(
        f"--settings {method}= needs distinct positive values: {text}")
  return method, parsed


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "hecsb_jax", "decoded_images")


class _Parser(argparse.ArgumentParser):
  """Bad options end in one line, like every other error of the command."""

  def error(self, message):
    self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
  p = _Parser(
      prog="python -m experiments.split_rd",
      description=__doc__.split("\n\n")[0],
  )
  p.add_argument("--data-dir", required=True,
                 help="folder holding imagenet_samples/, extra_images/ and"
                 " weights/, e.g. ../shared/data; with --backbone resnet50,"
                 " the tfds data_dir holding the prepared imagenet2012")
  p.add_argument("--out", default=os.path.join("runs", "split_rd"))
  p.add_argument("--backbone", choices=BACKBONES,
                 default="efficientnet_lite0",
                 help="resnet50 runs the paper-scale config (ImageNet"
                 " through tfds; needs --weights)")
  p.add_argument("--weights", default=None,
                 help="the teacher's weights file (default: the"
                 " EfficientNet-Lite0 .npz under --data-dir)")
  p.add_argument("--quick", action="store_true",
                 help="a minute or two: a few images, tiny epochs, every"
                 " method and output")
  p.add_argument("--methods", type=_parse_methods, default=None,
                 help="comma-separated subset of"
                 f" {','.join(split_rd_config.METHODS)} (default all)")
  p.add_argument("--betas", type=parse_betas, default=None,
                 help="HECS-B's rate weights, one model each (default: the"
                 " config's; same as --settings hecsb=...)")
  p.add_argument("--settings", type=_parse_settings, action="append",
                 default=[], metavar="METHOD=V1,V2",
                 help="a learned method's settings, one model each, instead"
                 " of the config's: svb=1e-5,1e-3 (β), crbq=2,8 (channels),"
                 " neural_codec=0.0067 (λ), hecsb=... (β); repeatable")
  p.add_argument("--acquisition", choices=tuple(ACQUISITIONS),
                 default=None,
                 help="the edge encoder before the measurement: the"
                 " teacher's own layers up to the split, frozen (prefix,"
                 " the config's default) or trained in stage 1"
                 " (prefix-finetuned), or a from-scratch shallow network")
  p.add_argument("--measurement-init", choices=("random", "principal"),
                 default=None,
                 help="HECS-B's start: W along the features' principal"
                 " directions and a linear decoder path at their transpose"
                 " (principal, the config's default; needs the prefix"
                 " acquisition), or W random and the decoder from scratch"
                 " (random: the models of docs/results/split_rd/)")
  p.add_argument("--measurements", type=positive_int, default=None,
                 metavar="M",
                 help="HECS-B's m, the channels the edge measures and codes"
                 " (default: the config's); a model's folder keeps its"
                 " m in its fingerprint, so another m needs another --out")
  p.add_argument("--stage2-train", choices=split_rd_config.STAGE2_TRAINS,
                 default=None,
                 help="what HECS-B's stage 2 trains: the decoder (the"
                 " config's default), the decoder and the teacher's tail"
                 " (encoder and prior frozen, as sc2bench), or the whole"
                 " student (as the paper). A finished stage 1 is reused:"
                 " copy ckpt/<model>/stage1/ into a new --out")
  p.add_argument("--eval-only", action="store_true",
                 help="score the finished models of --out without training")
  p.add_argument("--eval-dir", default=None,
                 help="folder in the imagenet_samples layout to score"
                 " (every holdout image); default DATA_DIR/imagenet_samples")
  p.add_argument("--tune", action="store_true",
                 help="hold a quarter of dev out of training and score on it"
                 " instead of holdout (for choosing settings); writes"
                 " under OUT/tune/")
  p.add_argument("--tune-fold", type=int, choices=split_rd_config.TUNE_FOLDS,
                 default=None,
                 help="which quarter of dev --tune holds out: the images"
                 " with class_index %% 5 == FOLD (default 3; holdout is"
                 " 4); a fold other than 3 writes under OUT/tune_fold<FOLD>/")
  p.add_argument("--cache-dir", default=default_cache_dir(),
                 help="where decoded 224x224 crops are cached")
  p.add_argument("--overwrite", action="store_true",
                 help="delete the checkpoints under --out first (instead"
                 " of refusing ones made with other settings)")
  p.add_argument("--distributed", action="store_true",
                 help="one process of a multi-host run"
                 " (jax.distributed.initialize; TPU pods, SLURM and Open"
                 " MPI are detected)")
  p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="with --distributed on other clusters: process 0's"
                 " address and a free port")
  p.add_argument("--num-processes", type=int, default=None,
                 help="with --coordinator: the number of processes")
  p.add_argument("--process-id", type=int, default=None,
                 help="with --coordinator: this process's index")
  p.add_argument("--no-progress", action="store_true")
  p.add_argument("--debug", action="store_true",
                 help="on an error, show the whole traceback")
  args = p.parse_args(argv)
  if args.eval_only and args.overwrite:
    p.error("--eval-only scores existing checkpoints; --overwrite would"
            " delete them")
  if args.tune_fold is not None and not args.tune:
    p.error("--tune-fold picks the part of dev --tune holds out; it needs"
            " --tune")
  if args.tune and (args.eval_only or args.eval_dir):
    p.error("--tune scores the held-out part of dev; it takes neither"
            " --eval-only nor --eval-dir")
  if args.acquisition == "shallow" and args.measurement_init == "principal":
    p.error("--measurement-init principal starts at the teacher prefix's"
            " principal directions: it needs --acquisition prefix or"
            " prefix-finetuned")
  if args.backbone == "resnet50" and args.quick:
    p.error("--quick exists for efficientnet_lite0 only")
  if args.backbone == "resnet50" and not args.weights:
    p.error("--backbone resnet50 needs --weights (no ResNet-50 weights are"
            " in --data-dir)")
  if args.backbone == "resnet50" and (args.tune or args.eval_dir):
    p.error("--backbone resnet50 trains and scores on tfds imagenet2012"
            " (train, validation); --tune and --eval-dir take folders")
  cluster = (args.coordinator, args.num_processes, args.process_id)
  if any(a is not None for a in cluster) and not args.distributed:
    p.error("--coordinator, --num-processes and --process-id go with"
            " --distributed")
  if any(a is not None for a in cluster) and None in cluster:
    p.error("--coordinator, --num-processes and --process-id go together")
  if args.num_processes is not None and not (
      0 <= args.process_id < args.num_processes):
    p.error(f"--process-id must be in 0 .. {args.num_processes - 1}")
  return args


def build_config(args):
  arg = "quick" if args.quick else (
      "paper" if args.backbone == "resnet50" else None)
  config = split_rd_config.get_config(arg)
  if args.methods is not None:
    config.methods = args.methods
  if args.betas is not None:
    config.hecsb.betas = args.betas
  for method, values in args.settings:
    section, key, _ = SETTINGS[method]
    config[section][key] = values
  set_encoder(config, args.acquisition, args.measurement_init)
  set_measurements(config, args.measurements)
  if args.stage2_train is not None:
    config.hecsb.stage2_train = args.stage2_train
  if args.tune_fold is not None:
    config.data.tune_remainder = args.tune_fold
  config.lock()
  return config


def _check_inputs(args, config) -> tuple[Path, Path | None]:
  """Folders that must exist before anything starts (one-line errors).

  Returns:
    (data folder, evaluation folder; None for the tfds source).
  """
  data_dir = Path(args.data_dir)
  if config.data.source == "tfds":
    if not data_dir.is_dir():
      raise FileNotFoundError(
          f"{data_dir}: tfds data_dir not found (expected the prepared"
          " imagenet2012: imagenet_pipeline.prepare_imagenet2012)")
    return data_dir, None
  if config.data.source != "folder":
    raise NotImplementedError(
        f"data source {config.data.source!r}: expected folder or tfds")
  if not data_dir.is_dir():
    raise FileNotFoundError(f"{data_dir}: data folder not found (expected"
                            " imagenet_samples/, extra_images/, weights/)")
  eval_dir = Path(args.eval_dir) if args.eval_dir else (
      data_dir / config.data.samples_dir)
  if not eval_dir.is_dir():
    raise FileNotFoundError(f"{eval_dir}: evaluation folder not found"
                            " (expected images/, labels.csv, split.csv)")
  return data_dir, eval_dir


def run(args: argparse.Namespace, argv_text: str) -> dict:
  """The experiment; raises on bad inputs or stale checkpoints."""
  config = build_config(args)
  data_dir, eval_dir = _check_inputs(args, config)
  # Heavy imports after the options are known to be sane.
  from experiments import split_rd_report
  from experiments import split_rd_run
  from hecsb_jax.train import distributed

  if args.distributed:  # before anything touches a device
    distributed.initialize(args.coordinator, args.num_processes,
                           args.process_id)
  primary = distributed.is_primary()
  out = Path(args.out, *tune_subdir(args))
  eval_name = "validation" if eval_dir is None else eval_dir.resolve().name
  dest = out / "eval" / eval_name if args.eval_only else out
  if args.overwrite and primary:
    shutil.rmtree(out / "ckpt", ignore_errors=True)
  distributed.barrier("checkpoints cleared")
  started = time.perf_counter()
  results, details = split_rd_run.run_experiment(
      config, data_dir, out, eval_dir=eval_dir, eval_only=args.eval_only,
      tune=args.tune, weights=args.weights, cache_dir=Path(args.cache_dir),
      progress=not args.no_progress,
      log=print if primary else lambda text: None)
  if not primary:  # every process scored alike; one writes
    return results
  minutes = (time.perf_counter() - started) / 60
  dest.mkdir(parents=True, exist_ok=True)
  kept = split_rd_report.merge_earlier(results, details, dest)
  if kept:
    print(f"kept from {dest}/results.json (same images, not rerun):"
          f" {', '.join(kept)}")
  split_rd_report.write_json(results, dest / "results.json")
  details.update(command=f"python -m experiments.split_rd {argv_text}",
                 minutes=minutes, config=config.to_dict())
  with open(dest / "details.json", "w") as f:
    json.dump(details, f, indent=2, default=str)
  notes = (
      f"Command: `python -m experiments.split_rd {argv_text}` —"
      f" {minutes:.1f} min. {config.backbone} cut after {config.split};"
      f" {details['num_eval_images']} {results['split']} images of"
      f" `{details['eval_dir']}`"
      + ("" if args.eval_only else
         f"; {details['num_train_images']} training images")
      + f". HECS-B: m = {config.hecsb.num_measurements},"
      f" {config.hecsb.acquisition} acquisition"
      + (", W and a linear decoder path started at the features' principal"
         " directions" if config.hecsb.measurement_init == "principal"
         else "") + ", stage 1"
      f" {config.stage1.epochs} epochs, stage 2 {config.stage2.epochs}"
      f" (HECS-B: {config.hecsb.stage2_train}, the baselines:"
      f" {config.stage2.train}); the whole network costs"
      f" {details['teacher_gflops_per_image']:.3f} GFLOP per image (XLA's"
      " count). Bytes: real containers / files of one"
      " image each, headers included, averaged. Codecs: JPEG with"
      " optimized Huffman tables (4:2:0), WebP lossy at method 6, PNG at"
      f" level {config.codecs.png_compress_level}; {details['codecs']}.")
  markdown = split_rd_report.results_markdown(results, notes,
                                              details["models"])
  (dest / "results.md").write_text(markdown)
  split_rd_report.plot_rd_curve(results, dest / "rd_curve.png")
  print(markdown)
  print(f"wrote {dest}/results.json, results.md, rd_curve.png,"
        " details.json")
  return results


def main(argv=None) -> dict:
  """The command line: errors end in one line and exit status 2."""
  args = parse_args(argv)
  argv_text = " ".join(sys.argv[1:] if argv is None else argv)
  from hecsb_jax.data.errors import DataFormatError
  from hecsb_jax.models.weights import WeightsError
  from hecsb_jax.train.checkpoint import CheckpointMismatchError

  def hint(e: BaseException) -> str:
    if not isinstance(e, CheckpointMismatchError):
      return ""
    if args.eval_only:
      return (". Score with the options the run was trained with"
              " (--quick, --backbone, --measurement-init,"
              " --measurements)")
    ckpt = os.path.join(args.out, *tune_subdir(args), "ckpt")
    return (f". Use another --out, or --overwrite to delete {ckpt} and"
            " retrain")

  with one_line_errors((OSError, DataFormatError, WeightsError,
                        CheckpointMismatchError, NotImplementedError,
                        OptionError),
                       debug=args.debug, hint=hint):
    return run(args, argv_text)


if __name__ == "__main__":
  main()
