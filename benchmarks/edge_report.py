"""The outputs of `benchmarks.edge_cost`: tables, JSON, and the plot of
bytes per image against edge time.

    python -m benchmarks.edge_cost --results RUN_DIR/results.json \\
        --plot edge_time.png

A row (what `edge_cost` measures, and what --json writes under "rows"):

    {"name": str, "method": METHODS key, "jpeg" / "webp" / "png", or None
       (the reference rows), "setting": str or None,
     "params": int (on the edge only),
     "edge": {"ms": f, "flops": f or None, "impl": the faster depthwise
              implementation (None: the function has no depthwise conv),
              "memory": {"argument_bytes", "output_bytes", "temp_bytes",
                         "total_bytes"} or None},
     "coder_ms": f or None (symbols -> payload), "bytes": int or None
       (this image's payload, untrained models),
     "server": None or {"ms": f (decode + fn), "decode_ms": f,
                        "fn_ms": f, "flops", "memory", "impl"}}

The plot: each (method, setting) of a split_rd results.json is one point,
its bytes per image there (trained models, real payloads) against the time
the edge spends per image in the rows (one CPU thread, batch 1):
  * a learned method: its edge row's head plus its coder (rANS, or CR+BQ's
    packing). That row is built at one setting; the others share its time
    (β and λ change values, not shapes; CR+BQ's k barely changes it);
    HECS-B's is the teacher-prefix head, split_rd's default acquisition;
  * jpeg / webp / png: Pillow's encode time of that format at that setting.

Matplotlib is imported inside the plotting function (the ``experiments``
extra); the rest needs no plotting library and no JAX.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Mapping, Sequence

from experiments.split_rd_report import METHOD_LABELS

IMAGE_CODECS = ("jpeg", "webp", "png")
# The name of edge_cost's reference row (the whole network on the edge).
WHOLE = "whole EfficientNet-Lite0 (reference)"
# What each method's server runs.
SERVER_PARTS = {
    "hecsb": "decoder + tail", "svb": "decoder + tail",
    "crbq": "decoder + tail", "neural_codec": "g_s + teacher",
    "jpeg": "decode + teacher", "webp": "decode + teacher",
    "png": "decode + teacher",
}
MARKERS = "osD^vP*Xh<>"


# ---------------------------------------------------------------- tables


def _mb(memory: dict | None) -> str:
  return "n/a" if memory is None else f"{memory['total_bytes'] / 2**20:.1f}"


def _opt(value, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def _gflops(stats: Mapping) -> float | None:
  flops = stats.get("flops")
  return None if flops is None else flops / 1e9


def print_edge_table(rows: Sequence[Mapping]) -> None:
  whole = next(r for r in rows if r["name"] == WHOLE)
  print(f"{'on the edge (one thread)':44s}{'params':>10s}{'GFLOPs':>8s}"
        f"{'ms/img':>9s}{'vs whole':>9s}{'mem MB':>8s}{'+coder ms':>10s}"
        f"{'bytes':>8s}  setting, depthwise")
  for row in rows:
    edge = row["edge"]
    print(f"{row['name'][:43]:44s}{row['params']:10,d}"
          f"{_opt(_gflops(edge), '8.3f'):>8s}{edge['ms']:9.2f}"
          f"{edge['ms'] / whole['edge']['ms']:9.1%}{_mb(edge['memory']):>8s}"
          f"{_opt(row['coder_ms'], '10.3f'):>10s}"
          f"{_opt(row['bytes'], ',d'):>8s}"
          f"  {row['setting'] or ''} {edge.get('impl') or ''}".rstrip())
  print("mem: XLA's buffers of the compiled call (arguments, i.e. the"
        " parameters it reads and the image, + outputs + temps); bytes:"
        " this image, untrained models (results.json has the trained"
        " sizes); CR+BQ's cost barely depends on k.")


def print_server_table(rows: Sequence[Mapping]) -> None:
  print(f"{'server, per image (this process, ONE thread)':44s}"
        f"{'decode ms':>10s}{'fn ms':>9s}{'GFLOPs':>8s}{'mem MB':>8s}"
        f"{'total ms':>9s}")
  for row in rows:
    server = row["server"]
    if server is None:
      continue
    name = f"{row['method']} {row['setting']}: {SERVER_PARTS[row['method']]}"
    print(f"{name[:43]:44s}{server['decode_ms']:10.3f}"
          f"{server['fn_ms']:9.2f}{_opt(_gflops(server), '8.3f'):>8s}"
          f"{_mb(server.get('memory')):>8s}{server['ms']:9.2f}")
  print("(a real server has more threads and an accelerator: upper bounds;"
        " image codecs: Pillow decode + the whole teacher)")


def print_summary(rows: Sequence[Mapping]) -> None:
  whole = next(r for r in rows if r["name"] == WHOLE)
  hecsb = next(r for r in rows if r["method"] == "hecsb")
  ms = hecsb["edge"]["ms"] + hecsb["coder_ms"]
  print(f"HECS-B edge (prefix head + coder) vs whole network:"
        f" {ms / whole['edge']['ms']:.1%} of the time,"
        f" {hecsb['edge']['flops'] / whole['edge']['flops']:.1%} of the"
        f" FLOPs, {hecsb['params'] / whole['params']:.1%} of the parameters")


def write_json(path: str | os.PathLike, rows: Sequence[Mapping],
               **meta) -> None:
  with open(path, "w") as f:
    json.dump({**meta, "rows": list(rows)}, f, indent=2)
    f.write("\n")


# ------------------------------------------------------------------ plot


def read_results(path: str | os.PathLike) -> dict:
  with open(path) as f:
    results = json.load(f)
  if "methods" not in results:
    raise ValueError(f"{path}: not a split_rd results.json (no 'methods')")
  return results


def with_result_qualities(config, results: Mapping | None):
  """A copy of ``config`` whose JPEG and WebP qualities also hold every
  quality ``results`` names (a run made with another config), so that
  each point of the plot has its own encode time."""
  config = copy.deepcopy(config)
  for method in ("jpeg", "webp"):
    key = f"{method}_qualities"
    qualities = set(config.codecs[key])
    for score in (results or {}).get("methods", {}).get(method, []):
      if score["setting"].startswith("q="):
        qualities.add(int(score["setting"][2:]))
    config.codecs[key] = tuple(sorted(qualities))
  return config


def edge_ms(rows: Sequence[Mapping], method: str, setting: str
            ) -> float | None:
  """The edge's milliseconds per image for one results.json point, or None
  where no row gives it."""
  for row in rows:
    if row.get("method") != method:
      continue
    if method in IMAGE_CODECS:
      if row["setting"] == setting:
        return row["edge"]["ms"]
    else:
      return row["edge"]["ms"] + (row.get("coder_ms") or 0.0)
  return None


def points(results: Mapping, rows: Sequence[Mapping]
           ) -> tuple[dict[str, list[tuple[float, float]]],
                      list[tuple[str, str]]]:
  """method -> [(edge ms, bytes per image)], and the (method, setting)
  pairs without an edge time."""
  found, missing = {}, []
  for method, scores in results["methods"].items():
    for score in scores:
      ms = edge_ms(rows, method, score["setting"])
      if ms is None:
        missing.append((method, score["setting"]))
      else:
        found.setdefault(method, []).append((ms, score["bytes_per_image"]))
  return found, missing


def plot_bytes_vs_edge_time(results: Mapping, rows: Sequence[Mapping],
                            path: str | os.PathLike
                            ) -> list[tuple[str, str]]:
  """Draws every point of ``results`` (log-log), the whole network's edge
  time as a vertical line; returns the points left out (no edge time)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  found, missing = points(results, rows)
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  # The same marker and colour for a method whichever others are there.
  order = list(METHOD_LABELS) + sorted(set(found) - set(METHOD_LABELS))
  for method, pts in found.items():
    i = order.index(method)
    pts = sorted(pts, key=lambda p: p[1])
    ax.plot([p[0] for p in pts], [p[1] for p in pts],
            marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}",
            linestyle=":", label=METHOD_LABELS.get(method, method))
  whole = next((r for r in rows if r["name"] == WHOLE), None)
  if whole is not None:
    ax.axvline(whole["edge"]["ms"], color="gray", linestyle="--",
               label="whole network on the edge")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("edge time per image, ms (one CPU thread, batch 1)")
  ax.set_ylabel("bytes per image (results.json)")
  ax.set_title("What the edge sends vs what it spends")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return missing
