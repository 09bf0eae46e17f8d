"""Outputs of the split rate-accuracy experiment: results.json, results.md,
rd_curve.png.

results.json holds exactly the issue's schema:

    {"teacher": {"top1": f, "top5": f}, "split": "holdout",
     "methods": {"<method>": [{"setting": str, "bytes_per_image": f,
                               "top1": f, "top5": f}, ...]}}

Matplotlib is imported inside the plotting function: only writing the
figure needs it (the ``experiments`` extra).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

METHOD_LABELS = {
    "hecsb": "HECS-B",
    "svb": "SVB",
    "crbq": "CR+BQ",
    "neural_codec": "Ballé 2018 codec",
    "jpeg": "JPEG",
    "webp": "WebP",
    "png": "PNG",
}
SCORE_KEYS = ("setting", "bytes_per_image", "top1", "top5")
# Methods that send an image: their points may add the decoded images'
# mean PSNR (lossy ones; PNG is lossless).
IMAGE_METHODS = ("neural_codec", "jpeg", "webp", "png")
PSNR_KEY = "psnr_db"
CODECS = ("jpeg", "webp")
# The learned baselines HECS-B is compared with, level by level.
BASELINES = ("svb", "crbq", "neural_codec")
# The bar: within this much top-1 of the teacher ...
TOP1_TOLERANCE = 0.02
# ... at no more than this fraction of the best codec's bytes.
BYTES_FRACTION = 0.5


def check_schema(results: Mapping) -> None:
  """Raises ValueError where ``results`` leaves the results.json schema."""
  if set(results) != {"teacher", "split", "methods"}:
    raise ValueError(f"top-level keys {sorted(results)}")
  if set(results["teacher"]) != {"top1", "top5"}:
    raise ValueError(f"teacher keys {sorted(results['teacher'])}")
  for method, scores in results["methods"].items():
    allowed = [SCORE_KEYS]
    if method in IMAGE_METHODS:
      allowed.append(SCORE_KEYS + (PSNR_KEY,))
    for score in scores:
      if tuple(score) not in allowed:
        raise ValueError(f"{method}: keys {list(score)}")


def write_json(results: Mapping, path: str | os.PathLike) -> None:
  check_schema(results)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def merge_earlier(results: dict, details: dict, folder: Path) -> list[str]:
  """Adds to ``results`` the methods an earlier run scored in ``folder`` on
  the same images that this run did not score (so ``--methods svb`` adds
  SVB to a finished run instead of replacing it); their models' details
  too. Earlier scores of the methods this run scored are replaced.

  The earlier run counts only when its split, number of images and
  teacher scores are this run's (the same evaluation set); otherwise it
  is left alone and overwritten.

  Returns:
    the methods kept from the earlier run.
  """
  try:
    earlier = json.loads((folder / "results.json").read_text())
    earlier_details = json.loads((folder / "details.json").read_text())
  except (OSError, ValueError):
    return []
  same_images = (
      earlier.get("split") == results["split"]
      and earlier.get("teacher") == results["teacher"]
      and earlier_details.get("num_eval_images")
      == details["num_eval_images"])
  if not same_images:
    return []
  kept = [m for m in earlier.get("methods", {})
          if m not in results["methods"]]
  methods = dict(results["methods"], **{
      m: earlier["methods"][m] for m in kept})
  order = list(METHOD_LABELS)
  results["methods"] = dict(sorted(
      methods.items(),
      key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
  for method in kept:
    prefix = f"{method}_"
    for name, info in earlier_details.get("models", {}).items():
      if name.startswith(prefix) and name not in details["models"]:
        details["models"][name] = info
  return kept


def bytes_for_top1(scores: Sequence[Mapping], top1: float) -> float | None:
  """Bytes per image a method needs to reach ``top1``, or None if it never
  does.

  The curve is the method's upper envelope (the best top-1 reached with at
  most b bytes: a codec's measured points are not monotone, and a sender
  would never pick a larger setting that scores worse), interpolated
  linearly in log bytes between measured points.
  """
  pts = sorted((s["bytes_per_image"], s["top1"]) for s in scores)
  best, envelope = -1.0, []
  for b, a in pts:
    if a > best:
      best = a
      envelope.append((b, a))
  if not envelope or envelope[-1][1] < top1:
    return None
  if envelope[0][1] >= top1:
    return envelope[0][0]
  for (b0, a0), (b1, a1) in zip(envelope, envelope[1:]):
    if a1 >= top1:
      t = (top1 - a0) / (a1 - a0)
      return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
  return None


def best_codec_bytes(results: Mapping, top1: float
                     ) -> tuple[float | None, str | None]:
  """(bytes, method) of the cheaper of JPEG and WebP at ``top1``."""
  found = [(b, m) for m in CODECS if m in results["methods"]
           for b in [bytes_for_top1(results["methods"][m], top1)]
           if b is not None]
  return min(found) if found else (None, None)


def comparison_markdown(results: Mapping) -> list[str]:
  """Each HECS-B point beside the bytes the best codec needs for its
  top-1, and the issue's bar (teacher - 2 points at <= half the bytes)."""
  scores = results["methods"].get("hecsb")
  if not scores or not any(m in results["methods"] for m in CODECS):
    return []
  lines = ["", "## HECS-B against the best of JPEG and WebP", "",
           "| HECS-B setting | bytes / image | top-1 | best codec's bytes"
           " for that top-1 | HECS-B / codec |",
           "|---|---:|---:|---:|---:|"]
  for s in sorted(scores, key=lambda s: s["bytes_per_image"]):
    codec_bytes, codec = best_codec_bytes(results, s["top1"])
    lines.append(
        f"| {s['setting']} | {s['bytes_per_image']:,.1f} | {s['top1']:.3f}"
        + (" | – (not reached) | – |" if codec_bytes is None else
           f" | {codec_bytes:,.1f} ({METHOD_LABELS[codec]}) |"
           f" {s['bytes_per_image'] / codec_bytes:.2f} |"))
  target = results["teacher"]["top1"] - TOP1_TOLERANCE
  ours = bytes_for_top1(scores, target)
  codec_bytes, codec = best_codec_bytes(results, target)
  lines += ["", f"Bar: top-1 >= {target:.3f} (teacher - "
            f"{TOP1_TOLERANCE:g}) at <= {BYTES_FRACTION:g} x the best"
            " codec's bytes (both curves interpolated in log bytes)."]
  if ours is None:
    best = max(s["top1"] for s in scores)
    lines.append(f"Not met: HECS-B does not reach {target:.3f} (its best"
                 f" top-1 is {best:.3f})"
                 + ("" if codec_bytes is None else
                    f"; {METHOD_LABELS[codec]} reaches it at"
                    f" {codec_bytes:,.0f} B") + ".")
  elif codec_bytes is None:
    lines.append(f"HECS-B reaches it at {ours:,.0f} B; no codec setting"
                 " does.")
  else:
    verdict = "Met" if ours <= BYTES_FRACTION * codec_bytes else "Not met"
    lines.append(f"{verdict}: HECS-B reaches it at {ours:,.0f} B,"
                 f" {METHOD_LABELS[codec]} at {codec_bytes:,.0f} B"
                 f" ({ours / codec_bytes:.2f} x).")
  return lines


def baseline_ratios(results: Mapping, baseline: str, levels: int = 3
                    ) -> list[tuple[float, float, float]]:
  """(top-1, HECS-B bytes, baseline bytes) at ``levels`` accuracies both
  reach: evenly spaced over the top-1 range the two upper envelopes
  share, ends included (one level if they share one point; none if
  none). Bytes by `bytes_for_top1`."""
  ours, theirs = (results["methods"].get(m) for m in ("hecsb", baseline))
  if not ours or not theirs:
    return []
  low = max(min(s["top1"] for s in ours), min(s["top1"] for s in theirs))
  high = min(max(s["top1"] for s in ours), max(s["top1"] for s in theirs))
  if high < low:
    return []
  points = [high] if high == low else [
      low + (high - low) * i / (levels - 1) for i in range(levels)]
  return [(a, bytes_for_top1(ours, a), bytes_for_top1(theirs, a))
          for a in points]


def baselines_markdown(results: Mapping) -> list[str]:
  """HECS-B's bytes over each learned baseline's at equal top-1."""
  present = [b for b in BASELINES if b in results["methods"]]
  if "hecsb" not in results["methods"] or not present:
    return []
  lines = ["", "## HECS-B against the learned baselines", "",
           "| baseline | top-1 | HECS-B bytes | baseline bytes |"
           " HECS-B / baseline |", "|---|---:|---:|---:|---:|"]
  for b in present:
    rows = baseline_ratios(results, b)
    if not rows:
      lines.append(f"| {METHOD_LABELS[b]} | – (no top-1 both reach) |"
                   " – | – | – |")
    for a, ours, theirs in rows:
      lines.append(f"| {METHOD_LABELS[b]} | {a:.3f} | {ours:,.1f} |"
                   f" {theirs:,.1f} | {ours / theirs:.2f} |")
  return lines


def models_markdown(models: Mapping[str, Mapping]) -> list[str]:
  """Per learned model: its coding tables' id and its last training
  epoch (training-set figures: the rate there is the prior's estimate
  under noise, not coded bytes; the image codec's single stage shows its
  image MSE and bits per pixel in the stage-1 columns)."""
  lines = ["| model | tables id | edge GFLOP / image | stage-1 MSE |"
           " stage-1 bits / image (codec: bpp) | stage-2 KL |"
           " stage-2 top-1 (train) |",
           "|---|---|---:|---:|---:|---:|---:|"]

  def cell(d, k):
    return "–" if k not in d else f"{d[k]:.4g}"

  for name, summary in models.items():
    s1 = summary.get("stage1", summary.get("codec", {}))
    s2 = summary.get("stage2", {})
    rate = "train_bits_per_image" if "stage1" in summary else "train_bpp"
    lines.append(
        f"| {name} | `{summary.get('model_id', '– (8-bit tensor)')}` |"
        f" {cell(summary, 'edge_gflops_per_image')} |"
        f" {cell(s1, 'train_mse')} | {cell(s1, rate)} |"
        f" {cell(s2, 'train_kl')} | {cell(s2, 'train_top1')} |")
  return lines


def results_markdown(results: Mapping, notes: str = "",
                     models: Mapping[str, Mapping] | None = None) -> str:
  """One table per method (settings by rate; the image codecs' mean PSNR
  beside), the teacher above them, HECS-B against the codecs and the
  learned baselines, and the learned models' training summaries when
  given."""
  t = results["teacher"]
  lines = [f"# Rate vs accuracy on `{results['split']}`", ""]
  if notes:
    lines += [notes, ""]
  lines += [f"Teacher (the unsplit network on the uncompressed crop):"
            f" top-1 {t['top1']:.3f}, top-5 {t['top5']:.3f}.", "",
            "| method | setting | bytes / image | top-1 | top-5 |"
            " image PSNR, dB |",
            "|---|---|---:|---:|---:|---:|"]
  for method, scores in results["methods"].items():
    for s in sorted(scores, key=lambda s: s["bytes_per_image"]):
      psnr = f"{s[PSNR_KEY]:.2f}" if PSNR_KEY in s else "–"
      lines.append(
          f"| {METHOD_LABELS.get(method, method)} | {s['setting']} |"
          f" {s['bytes_per_image']:,.1f} | {s['top1']:.3f} |"
          f" {s['top5']:.3f} | {psnr} |")
  lines += comparison_markdown(results)
  lines += baselines_markdown(results)
  if models:
    lines += ["", "## Learned models", ""] + models_markdown(models)
  return "\n".join(lines) + "\n"


def plot_rd_curve(results: Mapping, path: str | os.PathLike) -> None:
  """Bytes per image (log axis) vs top-1, one curve per method, the
  teacher as a horizontal line."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for method, scores in results["methods"].items():
    pts = sorted((s["bytes_per_image"], s["top1"]) for s in scores)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
            label=METHOD_LABELS.get(method, method))
  ax.axhline(results["teacher"]["top1"], color="gray", linestyle="--",
             label="teacher")
  ax.set_xscale("log")
  ax.set_xlabel("bytes per image (real containers / files, log scale)")
  ax.set_ylabel("top-1 accuracy")
  ax.set_title(f"Rate vs accuracy ({results['split']})")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
