"""Tables and figures of the compressed-sensing comparison.

Matplotlib is imported inside the plotting functions: it is only needed
when figures are written (the ``experiments`` extra), not by the library.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

METHOD_LABELS = {
    "hecsb": "HECS-B (UAE)",
    "lasso": "LASSO",
    "csgm_vae": "CSGM-VAE",
    "pca": "PCA",
}


# (method, score key, words): hyperparameters picked per m on validation.
_CHOSEN_ON_VALIDATION = (
    ("hecsb", "weight_decay", "weight decay"),
    ("lasso", "lambda", "lambda"),
)


def _table(by_method, methods, ms, value, marked=()) -> list[str]:
  """Rows = m, columns = methods; the lowest unmarked value in bold."""
  lines = ["| m | " + " | ".join(
      METHOD_LABELS[m] + (" †" if m in marked else "") for m in methods)
           + " |", "|---:|" + "---:|" * len(methods)]
  for m in ms:
    vals = [value(by_method[meth].get(str(m))) for meth in methods]
    best = min((v for v, meth in zip(vals, methods)
                if v is not None and meth not in marked), default=None)
    cells = ["–" if v is None else f"**{v:.3f}**" if v == best
             else f"{v:.3f}" for v in vals]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return lines


def results_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    notes: str = "",
) -> str:
  """Per dataset: the whole test set's table, then the fixed subset's.

  Rows = m, columns = methods, per-image squared l2 error. Methods scored
  on the subset alone (CSGM) appear in the first table marked with † and
  are not candidates for bold there.
  """
  lines = ["# Compressed sensing: per-image squared l2 error", ""]
  if notes:
    lines += [notes, ""]
  for dataset, by_method in results.items():
    methods = [m for m in METHOD_LABELS if m in by_method]
    ms = sorted({int(m) for meth in methods for m in by_method[meth]})
    scores = [s for meth in methods for s in by_method[meth].values()]
    full = {s["num_images"] for s in scores if s.get("eval_set") == "full"}
    subset = {s["subset_num_images"] for s in scores}
    marked = [meth for meth in methods
              if any(s.get("eval_set") == "subset"
                     for s in by_method[meth].values())]
    lines += [
        f"## {dataset}: the whole test set"
        f" ({', '.join(map(str, sorted(full)))} images; lower is better, the"
        " best in bold)", ""]
    lines += _table(by_method, methods, ms,
                    lambda s: None if s is None else s["l2_per_image"],
                    marked)
    if marked:
      lines += ["", "† " + ", ".join(METHOD_LABELS[m] for m in marked)
                + f": on the fixed subset of {', '.join(map(str, subset))}"
                " test images only (the table below)."]
    lines += ["", f"## {dataset}: the fixed subset"
              f" ({', '.join(map(str, sorted(subset)))} test images, every"
              " method)", ""]
    lines += _table(by_method, methods, ms,
                    lambda s: None if s is None else s["subset_l2_per_image"])
    lines.append("")
    chosen = [
        f"{METHOD_LABELS[meth]} {what} "
        + ", ".join(f"{by_method[meth][str(m)][key]:g} (m={m})"
                    for m in ms if key in by_method[meth].get(str(m), {}))
        for meth, key, what in _CHOSEN_ON_VALIDATION
        if any(key in v for v in by_method.get(meth, {}).values())
    ]
    if chosen:
      lines += ["Chosen on validation images: " + "; ".join(chosen) + ".", ""]
  return "\n".join(lines)


def plot_error_vs_m(results, path: str) -> None:
  """One panel per dataset, one curve per method, log-scaled error."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  datasets = list(results)
  fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4),
                           squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    for method, label in METHOD_LABELS.items():
      by_m = results[dataset].get(method, {})
      if not by_m:
        continue
      ms = sorted(int(m) for m in by_m)
      on_subset = any(v.get("eval_set") == "subset" for v in by_m.values())
      ax.plot(ms, [by_m[str(m)]["l2_per_image"] for m in ms],
              "o--" if on_subset else "o-",
              label=label + (" (test subset)" if on_subset else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measurements m")
    ax.set_ylabel("per-image squared l2 error")
    ax.set_title(dataset)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_reconstructions(
    shown: Mapping[str, np.ndarray],
    reconstructions: Mapping[str, Mapping[str, Mapping[int, np.ndarray]]],
    ms: list[int],
    path: str,
    image_shape: tuple[int, int] = (28, 28),
) -> None:
  """Per dataset: a row of originals, then one row per (m, method)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  datasets = list(shown)
  rows = []  # (dataset, label, images [k, n])
  for dataset in datasets:
    rows.append((dataset, "original", shown[dataset]))
    for m in ms:
      for method, label in METHOD_LABELS.items():
        imgs = reconstructions[dataset].get(method, {}).get(m)
        if imgs is not None:
          rows.append((dataset, f"{label}, m={m}", imgs))
  cols = max(len(r[2]) for r in rows)
  fig, axes = plt.subplots(len(rows), cols,
                           figsize=(cols * 0.9 + 2.2, len(rows) * 0.9),
                           squeeze=False)
  for r, (dataset, label, imgs) in enumerate(rows):
    for c in range(cols):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      if c < len(imgs):
        ax.imshow(np.clip(imgs[c], 0, 1).reshape(image_shape), cmap="gray",
                  vmin=0, vmax=1)
    axes[r][0].set_ylabel(f"{dataset}\n{label}", rotation=0, ha="right",
                          va="center", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
