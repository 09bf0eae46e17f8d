r"""What limits a finished split_rd run: measurements, not guesses.

    python -m experiments.split_rd_limits --data-dir ../shared/data \
        --out runs/split_rd_full [--quick] [--images 200] [--betas B,...]

For every finished HECS-B model of --out (one per β), on N training images
(the first N of `dev`, centre crops, no augmentation: images every model
was trained on) and on N `holdout` images, with the real rounding of the
edge:

* top-1 of the split model, of the teacher, and how often the two agree;
* the feature error at the split, mean of (decoder(ŷ) − teacher
  features)², beside the features' own mean square (a relative error);
* the same two without rounding (ŷ replaced by the continuous
  measurements y): what the quantization costs, apart from what the
  m-channel measurement and the decoder cost;
* the error floor of the best rank-k linear map of the features (their
  uncentred PCA), k = 8 … 32: what the m-channel measurement could reach
  with an ideal per-position decoder;
* the teacher's top-1 when Gaussian noise of the model's own feature-error
  variance is added to its split features: whether the error's size
  alone explains the accuracy lost, or its structure does;
* the bits per image the learned prior charges for the rounded symbols,
  beside the bits under each channel's own histogram over the set: a gap
  is a prior that does not describe what the encoder sends.

Read it as: a train/holdout gap in feature error or top-1 is overfitting;
no gap but a large error on both is capacity or too little training; a
rounded/continuous gap is the rate (β); a tail that tolerates noise of that
size but not the decoder's error says the error is not noise-like.

Writes OUT/limits.json and OUT/limits.md (a run trained with --quick is
read with --quick).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments import split_rd
from experiments import split_rd_data
from experiments import split_rd_methods
from experiments import split_rd_models
from experiments.cli_errors import one_line_errors
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import imagenet_pipeline as pipeline

BATCH = 25


@nnx.jit
def _measure(pair, x, noise_key):
  """Per-image sums and hits for one batch (see the module docstring)."""
  student, teacher = pair.student, pair.teacher
  split = student.split
  target = teacher.features(x, until=split)
  bottleneck = student.bottleneck
  y = bottleneck.measure(x)
  y_hat = jnp.round(y)
  _, coded = bottleneck.entropy(y, False)
  rounded = bottleneck.decode(y_hat)
  continuous = bottleneck.decode(y)
  axes = (1, 2, 3)
  out = {
      # Σ over positions of a aᵀ, per image: the uncentred covariance of
      # the features, for the best rank-k linear map's error.
      "gram": jnp.einsum("bhwc,bhwd->bcd", target, target),
      "target_sq": jnp.mean(target**2, axes),
      "mse_rounded": jnp.mean((rounded - target)**2, axes),
      "mse_continuous": jnp.mean((continuous - target)**2, axes),
      "teacher": teacher.tail(target, after=split),
      # The rate the prior charges for the rounded symbols, beside what
      # their own histogram would (measure_set): a prior that lags the
      # encoder charges for a spread the symbols no longer have.
      "prior_bits": coded["bits"],
      "symbols": y_hat.astype(jnp.int32),
      "rounded": student.tail_from_features(rounded),
      "continuous": student.tail_from_features(continuous),
  }
  # The teacher's tail under noise with this model's error variance (per
  # image, the rounded decoder's).
  sigma = jnp.sqrt(out["mse_rounded"])[:, None, None, None]
  noisy = target + sigma * jax.random.normal(noise_key, target.shape)
  out["teacher_noisy"] = teacher.tail(noisy, after=split)
  return out


def empirical_bits(symbols: np.ndarray) -> float:
  """Bits per image under each channel's own histogram over the set (the
  best any factorized prior fitted to these symbols could charge)."""
  flat = symbols.reshape(-1, symbols.shape[-1])
  total = 0.0
  for c in range(flat.shape[1]):
    _, counts = np.unique(flat[:, c], return_counts=True)
    p = counts / counts.sum()
    total -= float(np.sum(counts * np.log2(p)))
  return total / len(symbols)


def measure_set(pair, images, labels, norm) -> dict:
  """The measurements of `_measure`, averaged over one set of images."""
  x_all = pipeline.normalize(images, norm)
  parts = []
  for i in range(0, len(x_all), BATCH):
    out = _measure(pair, jnp.asarray(x_all[i:i + BATCH]),
                   jax.random.key(i))
    parts.append({k: np.asarray(v) for k, v in out.items()})
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  teacher_top = out["teacher"].argmax(-1)
  result = {"images": int(len(images)),
            "prior_bits_per_image": float(out["prior_bits"].mean()),
            "entropy_bits_per_image": empirical_bits(out["symbols"])}
  for name in ("teacher", "rounded", "continuous", "teacher_noisy"):
    top = out[name].argmax(-1)
    result[f"top1_{name}"] = float(np.mean(top == labels))
    if name != "teacher":
      result[f"agree_{name}"] = float(np.mean(top == teacher_top))
  energy = float(out["target_sq"].mean())
  for kind in ("rounded", "continuous"):
    mse = float(out[f"mse_{kind}"].mean())
    result[f"mse_{kind}"] = mse
    result[f"relative_mse_{kind}"] = mse / energy
  result["feature_mean_square"] = energy
  # The floor of any m-channel linear measurement with a per-position
  # linear decoder: the energy outside the top-m eigenvectors of the
  # features' uncentred covariance (PCA), relative to the total.
  eig = np.sort(np.linalg.eigvalsh(out["gram"].sum(0)))[::-1]
  result["rank_k_relative_error"] = {
      int(k): float(eig[k:].sum() / eig.sum())
      for k in (8, 16, 24, 32) if k < len(eig)}
  return result


def markdown(report: dict) -> str:
  lines = [
      "| model | set | top-1 | teacher | agree | rel. MSE | top-1 unrounded"
      " | rel. MSE unrounded | teacher + noise of that MSE |"
      " kbit / image, prior | kbit / image, histogram |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, sets in report["models"].items():
    for set_name, r in sets.items():
      lines.append(
          f"| {name} | {set_name} | {r['top1_rounded']:.3f} |"
          f" {r['top1_teacher']:.3f} | {r['agree_rounded']:.3f} |"
          f" {r['relative_mse_rounded']:.3f} |"
          f" {r['top1_continuous']:.3f} |"
          f" {r['relative_mse_continuous']:.3f} |"
          f" {r['top1_teacher_noisy']:.3f} |"
          f" {r['prior_bits_per_image'] / 1e3:.1f} |"
          f" {r['entropy_bits_per_image'] / 1e3:.1f} |")
  # The floors depend on the teacher's features only: one line per set.
  lines.append("")
  for set_name, r in next(iter(report["models"].values())).items():
    floors = ", ".join(f"rank {k}: {v:.3f}"
                       for k, v in r["rank_k_relative_error"].items())
    lines.append(f"Best rank-k linear map of the teacher's features"
                 f" (uncentred PCA), relative error on {set_name}:"
                 f" {floors}.")
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(
      prog="python -m experiments.split_rd_limits",
      description=__doc__.split("\n\n")[0])
  p.add_argument("--data-dir", required=True, type=Path)
  p.add_argument("--out", required=True, type=Path,
                 help="a finished split_rd run")
  p.add_argument("--quick", action="store_true",
                 help="the run was made with --quick")
  p.add_argument("--images", type=int, default=200,
                 help="images per set (training, holdout)")
  p.add_argument("--betas", type=split_rd.parse_betas, default=None,
                 help="HECS-B's β values to measure (default the"
                 " config's grid)")
  p.add_argument("--acquisition", choices=tuple(split_rd.ACQUISITIONS),
                 default=None,
                 help="the edge encoder the run was trained with (as"
                 " split_rd's option)")
  p.add_argument("--measurement-init", choices=("random", "principal"),
                 default=None,
                 help="the HECS-B start the run was trained with (as"
                 " split_rd's option)")
  p.add_argument("--measurements", type=split_rd.positive_int,
                 default=None, metavar="M",
                 help="the HECS-B m the run was trained with (as"
                 " split_rd's option)")
  p.add_argument("--cache-dir", default=None)
  args = p.parse_args(argv)
  config = split_rd_config.get_config("quick" if args.quick else None)
  if args.betas is not None:
    config.hecsb.betas = args.betas
  split_rd.set_encoder(config, args.acquisition, args.measurement_init)
  samples = args.data_dir / config.data.samples_dir
  cache = Path(args.cache_dir or split_rd.default_cache_dir())
  with one_line_errors((OSError, ValueError)):
    split_rd.set_measurements(config, args.measurements)
    teacher = split_rd_models.load_teacher(
        config, split_rd_models.weights_path(config, args.data_dir, None))
    pairs = []
    hecsb = split_rd_methods.METHODS["hecsb"]
    for beta in hecsb.values(config):
      model_dir = args.out / "ckpt" / hecsb.model_name(beta)
      if not (model_dir / "tables.npz").is_file():
        print(f"{model_dir.name}: not finished, skipped")
        continue
      pair = hecsb.build(teacher, config, beta)
      split_rd_models.load_finished_model(hecsb, pair, config, beta,
                                          model_dir)
      pair.eval()
      pairs.append((model_dir.name, pair))
    if not pairs:
      raise FileNotFoundError(f"{args.out / 'ckpt'}: no finished model")
    sets = {
        "train (dev)": split_rd_data.folder_split(
            samples, config.data.train_split, args.images, cache),
        "holdout": split_rd_data.folder_split(
            samples, config.data.eval_split, args.images, cache),
    }
  norm = pipeline.normalization(config.backbone)
  report = {"out": str(args.out), "models": {}}
  for name, pair in pairs:
    report["models"][name] = {
        set_name: measure_set(pair, data.images, data.labels, norm)
        for set_name, data in sets.items()}
    print(f"{name}: done", flush=True)
  with open(args.out / "limits.json", "w") as f:
    json.dump(report, f, indent=2)
  table = markdown(report)
  (args.out / "limits.md").write_text(table)
  print(table)
  return report


if __name__ == "__main__":
  main()
