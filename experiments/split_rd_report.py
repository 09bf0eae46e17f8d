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
import os
from typing import Mapping

METHOD_LABELS = {
    "hecsb": "HECS-B",
    "jpeg": "JPEG",
    "webp": "WebP",
    "png": "PNG",
}
SCORE_KEYS = ("setting", "bytes_per_image", "top1", "top5")


def check_schema(results: Mapping) -> None:
  """Raises ValueError where ``results`` leaves the results.json schema."""
  if set(results) != {"teacher", "split", "methods"}:
    raise ValueError(f"top-level keys {sorted(results)}")
  if set(results["teacher"]) != {"top1", "top5"}:
    raise ValueError(f"teacher keys {sorted(results['teacher'])}")
  for method, scores in results["methods"].items():
    for score in scores:
      if tuple(score) != SCORE_KEYS:
        raise ValueError(f"{method}: keys {list(score)}")


def write_json(results: Mapping, path: str | os.PathLike) -> None:
  check_schema(results)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def models_markdown(models: Mapping[str, Mapping]) -> list[str]:
  """Per HECS-B model: its coding tables' id and its last training epoch
  (training-set figures: the rate there is the prior's estimate under
  noise, not coded bytes)."""
  lines = ["| model | tables id | edge GFLOP / image | stage-1 MSE |"
           " stage-1 bits / image | stage-2 KL | stage-2 top-1 (train) |",
           "|---|---|---:|---:|---:|---:|---:|"]

  def cell(d, k):
    return "–" if k not in d else f"{d[k]:.4g}"

  for name, summary in models.items():
    s1, s2 = summary.get("stage1", {}), summary.get("stage2", {})
    lines.append(
        f"| {name} | `{summary.get('model_id', '?')}` |"
        f" {cell(summary, 'edge_gflops_per_image')} |"
        f" {cell(s1, 'train_mse')} | {cell(s1, 'train_bits_per_image')} |"
        f" {cell(s2, 'train_kl')} | {cell(s2, 'train_top1')} |")
  return lines


def results_markdown(results: Mapping, notes: str = "",
                     models: Mapping[str, Mapping] | None = None) -> str:
  """One table per method (settings by rate), the teacher above them, and
  the HECS-B models' training summaries when given."""
  t = results["teacher"]
  lines = [f"# Rate vs accuracy on `{results['split']}`", ""]
  if notes:
    lines += [notes, ""]
  lines += [f"Teacher (the unsplit network on the uncompressed crop):"
            f" top-1 {t['top1']:.3f}, top-5 {t['top5']:.3f}.", "",
            "| method | setting | bytes / image | top-1 | top-5 |",
            "|---|---|---:|---:|---:|"]
  for method, scores in results["methods"].items():
    for s in sorted(scores, key=lambda s: s["bytes_per_image"]):
      lines.append(
          f"| {METHOD_LABELS.get(method, method)} | {s['setting']} |"
          f" {s['bytes_per_image']:,.1f} | {s['top1']:.3f} |"
          f" {s['top5']:.3f} |")
  if models:
    lines += ["", "## HECS-B models", ""] + models_markdown(models)
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
