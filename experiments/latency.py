"""Per-image latency, edge + transfer + server, through shaped links (the
paper's Table 2).

    python -m experiments.latency runs/split_rd_v2/ckpt --out OUT
        [--rates 12.0,54.0,66.9] [--images 20] [--repeats 3]
        [--data-dir ../shared/data] [--results RESULTS_JSON] [--quick]
        [--edge auto|litert|jax] [--no-http] [--loopback]

For every finished model folder under CHECKPOINT_DIR (hecsb_beta..., and
svb_, crbq_, neural_codec_ ones) and every JPEG / WebP / PNG setting of
split_rd's config, on the first --images holdout images:

  edge ms    this CPU, ONE thread (not a Jetson or a phone): HECS-B's
             exported head.tflite under LiteRT (--edge litert; auto when
             hecsb_jax.export and LiteRT are installed) or its jitted JAX
             edge function (--edge jax; other learned methods always), +
             the payload's coder (`split_rd_methods`' to_bytes, e.g.
             `coding.compress`); for the image codecs Pillow's encode of
             the 224 crop.
  transfer   the payloads sent over a real TCP connection from one network
             namespace to another through a veth pair whose uplink is
             shaped by tc's tbf at each rate (`latency_net`), timed from
             the first byte sent to a one-byte answer from a sink server;
             bytes x 8 / rate beside it as a check.
  server ms  decode (`from_bytes`; Pillow's decode for the codecs) + the
             server's model at batch 1 (decoder + the teacher's tail; the
             codecs: the whole teacher), timed in this process on the same
             one thread; for HECS-B and SVB from the real server's
             timings_ms instead (below).
  HTTP ms    HECS-B and SVB: edge + one POST /v1/predict to the real server
             (`python -m hecsb_jax.serve`, batching off, run in the server
             namespace) through the same shaped link, timed by the client.

Times: best of --repeats per image; a network's forward pass (same cost
for every image) counts its best over all images, the rest the mean over
images (`latency_compute._row`). Top-1 comes from the split_rd run's
results.json (CHECKPOINT_DIR/../results.json, 200 holdout images); top-1 on
the images sent here is measured too.

Without root or without `ip`/`tc` it stops and says so; --loopback then
sends over this namespace's unshaped loopback and the totals use the
computed transfer times. Writes OUT/results.json, OUT/results.md (Table 2)
and OUT/latency.png (stacked bars: edge / transfer / server per setting,
one panel per rate).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import secrets
import socket
import statistics
import sys
import tempfile
import time

import numpy as np

from experiments import latency_net

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared/data"
RATES_MBIT = (12.0, 54.0, 66.9)
# Methods hecsb_jax.serve serves (an entropy-coded split model).
HTTP_METHODS = ("hecsb", "svb")
LABELS = {"hecsb": "HECS-B", "svb": "SVB", "crbq": "CR+BQ",
          "neural_codec": "Ballé 2018 codec", "jpeg": "JPEG", "webp": "WebP",
          "png": "PNG"}


# ------------------------------------------------------------- the table


def parse_rates(text: str) -> tuple[float, ...]:
  """"12.0,54.0" -> (12.0, 54.0); a clear error for anything else."""
  try:
    rates = tuple(float(r) for r in text.split(","))
  except ValueError:
    rates = ()
  if not rates or not all(0 < r < 1e5 for r in rates):
    raise argparse.ArgumentTypeError(
        f"--rates {text!r}: expected positive Mbit/s separated by commas,"
        " e.g. 12.0,54.0,66.9")
  return rates


def computed_ms(num_bytes: float, rate_mbit: float) -> float:
  """Transfer time of ``num_bytes`` at ``rate_mbit`` with no overhead."""
  return num_bytes * 8 / (rate_mbit * 1e3)


def add_totals(row: dict, shaped: bool) -> dict:
  """Fills ``row["links"][rate]["total_ms"]``: edge + transfer + server,
  with the measured transfer when the link was shaped, else the computed
  one (the unshaped loopback says nothing about the rate)."""
  for link in row["links"].values():
    transfer = link["measured_ms"] if shaped else link["computed_ms"]
    link["total_ms"] = row["edge_ms"] + transfer + row["server_ms"]
  return row


def _fmt(x: float | None, digits: int = 1) -> str:
  return "–" if x is None else f"{x:.{digits}f}"


def markdown(results: dict) -> str:
  """Table 2: one row per method and setting, a column group per rate."""
  rates = results["rates_mbit"]
  shaped = results["transfer"] == "shaped"
  head = ["method", "setting", "bytes/image", "top-1", "edge ms",
          "server ms"]
  for r in rates:
    head += [f"transfer ms @{r:g}" + ("" if shaped else " (computed)"),
             f"total ms @{r:g}", f"HTTP ms @{r:g}"]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for row in results["rows"]:
    cells = [LABELS.get(row["method"], row["method"]), row["setting"],
             f"{row['bytes_per_image']:.0f}", _fmt(row["top1"], 3),
             _fmt(row["edge_ms"]), _fmt(row["server_ms"])]
    for r in rates:
      link = row["links"][f"{r:g}"]
      transfer = (f"{link['measured_ms']:.2f} ({link['computed_ms']:.2f})"
                  if shaped else f"{link['computed_ms']:.2f}")
      http = row.get("http", {}).get(f"{r:g}")
      cells += [transfer, _fmt(link["total_ms"]),
                _fmt(http and row["edge_ms"] + http["request_ms"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def describe(results: dict) -> str:
  """results.md: how the numbers were made, then the table."""
  m = results["machine"]
  how = (
      "Transfer: real TCP (one persistent connection) from one network"
      " namespace to another over a veth pair, uplink shaped by"
      f" `tc ... {results['qdisc']}`; measured from the first byte sent to a"
      " one-byte answer of a sink server, in brackets bytes × 8 / rate."
      if results["transfer"] == "shaped" else
      "Transfer: NOT shaped (no root or no ip/tc here): the totals use"
      " bytes × 8 / rate.")
  return (
      "# Latency per image (Table 2)\n\n"
      f"{results['images']} holdout images, best of {results['repeats']}"
      " per image; a network's forward pass (the same cost for every image)"
      " counts its best over all images, coders and Pillow their per-image"
      " bests averaged, transfers their per-image bests averaged. Edge and server times on this machine's CPU,"
      f" ONE thread ({m['cpu']}; {m['note']}), not an edge device. Edge:"
      f" {results['edge_impl']}. Server: decode + the server's model at"
      " batch 1, timed in-process apart from the transfer. "
      f"{how} Total = edge + transfer + server. HTTP: edge + one POST"
      " /v1/predict through the same link to the real server,"
      f" {results['http']}, timed by the client (its transfer, HTTP and"
      " the server's decode and model; the server's own timings_ms give"
      " those rows' server ms). Top-1:"
      f" {results['top1_source']}; 'top1_sent' in results.json is top-1 on"
      " the images sent here.\n\n" + markdown(results))


def plot(results: dict, path: Path) -> None:
  """Stacked bars (edge / transfer / server ms) per setting, a panel per
  rate."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows, rates = results["rows"], results["rates_mbit"]
  shaped = results["transfer"] == "shaped"
  names = [f"{LABELS.get(r['method'], r['method'])} {r['setting']}"
           for r in rows]
  fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates),
                                                   0.3 * len(rows) + 1.5),
                           sharey=True, squeeze=False)
  y = np.arange(len(rows))
  for ax, rate in zip(axes[0], rates):
    links = [r["links"][f"{rate:g}"] for r in rows]
    edge = np.array([r["edge_ms"] for r in rows])
    transfer = np.array([l["measured_ms" if shaped else "computed_ms"]
                         for l in links])
    server = np.array([r["server_ms"] for r in rows])
    ax.barh(y, edge, label="edge (1 CPU thread)", color="tab:blue")
    ax.barh(y, transfer, left=edge, label="transfer", color="tab:orange")
    ax.barh(y, server, left=edge + transfer, label="server",
            color="tab:green")
    ax.set_title(f"{rate:g} Mbit/s")
    ax.set_xlabel("ms per image")
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(y, names, fontsize=7)
  axes[0][0].invert_yaxis()
  axes[0][-1].legend(loc="lower right", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def top1_from_results(path: Path) -> dict[tuple[str, str], float]:
  """(method, setting) -> top-1 of a split_rd results.json ({} if none)."""
  if not path.is_file():
    return {}
  try:
    data = json.loads(path.read_text())
    return {(method, s["setting"]): float(s["top1"])
            for method, scores in data["methods"].items() for s in scores}
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not a split_rd results.json ({e})") from e


# --------------------------------------------------------------- the link


def no_link_message(reason: str) -> str:
  return (f"cannot build the shaped link: {reason}. Run as root with"
          " iproute2 (ip, tc) installed, or pass --loopback to send over"
          " the unshaped loopback and use the computed transfer times"
          " (bytes x 8 / rate).")


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def measure_link(payloads: dict[int, list[bytes]], rates, repeats: int,
                 loopback: bool, servers: dict[int, Path]
                 ) -> tuple[dict, dict, str]:
  """Sends every row's payloads through the link at each rate.

  Args:
    payloads: row index -> its payloads, one per image.
    rates: Mbit/s.
    repeats: sends per payload (the best counts).
    loopback: the unshaped loopback instead of the namespaces.
    servers: row index -> its model folder, for the rows also sent to the
      real server (`python -m hecsb_jax.serve`, run in the server
      namespace, batching off: one pass per request).

  Returns:
    transfers: row -> rate -> [ms per payload] (the sink);
    http: row -> rate -> [best request per payload: {"ms", "timings_ms",
      "class"}];
    the qdisc's description (the last rate's).
  """
  link_cls = latency_net.LoopbackLink if loopback else latency_net.ShapedLink
  with tempfile.TemporaryDirectory() as tmp, link_cls() as link:
    files: dict[int, list[Path]] = {}
    for row, blobs in payloads.items():
      for i, blob in enumerate(blobs):
        files.setdefault(row, []).append(Path(tmp) / f"{row}_{i}.bin")
        files[row][-1].write_bytes(blob)
    flat = [(row, f) for row in files for f in files[row]]
    port = latency_net.start_sink(link)
    transfers, qdisc = {}, ""
    for rate in rates:
      link.set_rate(rate)
      qdisc = link.qdisc()
      times = latency_net.measure_uplink(link, port, [f for _, f in flat],
                                         repeats)
      for (row, _), t in zip(flat, times):
        transfers.setdefault(row, {}).setdefault(f"{rate:g}", []).append(
            min(t) * 1e3)
      print(f"  sink, {rate:g} Mbit/s: {len(flat)} payloads", flush=True)
    http = {}
    token = Path(tmp) / "token"
    token.write_text(secrets.token_hex(16))
    for row, folder in servers.items():
      http_port = _free_port() if loopback else 8000
      proc, _ = link.start_server(
          [sys.executable, "-m", "hecsb_jax.serve", str(folder), "--host",
           link.server_ip, "--port", str(http_port), "--token-file",
           str(token), "--no-batching"], ready=None)
      url = f"http://{link.server_ip}:{http_port}"
      for rate in rates:
        link.set_rate(rate)
        answers = latency_net.measure_http(link, url, token, files[row],
                                           repeats)
        http.setdefault(row, {})[f"{rate:g}"] = [
            min(a, key=lambda r: r["ms"]) for a in answers]
      link.stop(proc)
      print(f"  server {folder.name}: {len(files[row])} requests per rate",
            flush=True)
  return transfers, http, qdisc


def http_summary(answers: list[dict], labels) -> dict:
  """Means over the images of the best request's times (and the best
  forward pass of all); the server's top-1 on them."""
  t = [a["timings_ms"] for a in answers]
  return {"request_ms": statistics.fmean(a["ms"] for a in answers),
          "server_decode_ms": statistics.fmean(x["decode"] for x in t),
          "server_model_ms": statistics.fmean(x["model"] for x in t),
          "server_model_best_ms": min(x["model"] for x in t),
          "server_total_ms": statistics.fmean(x["total"] for x in t),
          "top1_sent": statistics.fmean(
              float(a["class"] == label) for a, label in zip(answers,
                                                             labels))}


# ------------------------------------------------------------------ main


def _args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("checkpoint_dir", type=Path,
                 help="a split_rd run's ckpt folder (model folders)")
  p.add_argument("--out", type=Path, required=True)
  p.add_argument("--rates", type=parse_rates, default=RATES_MBIT,
                 help="Mbit/s, comma separated (default 12.0,54.0,66.9)")
  p.add_argument("--images", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
  p.add_argument("--results", type=Path, default=None,
                 help="split_rd results.json for top-1 (default"
                 " CHECKPOINT_DIR/../results.json)")
  p.add_argument("--quick", action="store_true",
                 help="2 images, 1 repeat, two settings per codec")
  p.add_argument("--loopback", action="store_true",
                 help="no shaping: unshaped loopback, computed transfer")
  p.add_argument("--edge", choices=("auto", "litert", "jax"),
                 default="auto", help="HECS-B's edge head: the exported"
                 " .tflite under LiteRT, or the JAX head (auto: LiteRT"
                 " when hecsb_jax.export and LiteRT are installed)")
  p.add_argument("--no-http", action="store_true",
                 help="skip sending to the real server")
  args = p.parse_args(argv)
  if args.quick:
    args.images, args.repeats = 2, 1
  if args.images < 1 or args.repeats < 1:
    p.error("--images and --repeats must be >= 1")
  if not args.checkpoint_dir.is_dir():
    p.error(f"{args.checkpoint_dir}: not a folder (expected a split_rd"
            " run's ckpt folder holding model folders)")
  return args


def main(argv=None) -> dict:
  args = _args(argv)
  # Before anything slow: without a shaped link, say so and stop.
  reason = latency_net.unavailable()
  if reason and not args.loopback:
    sys.exit(no_link_message(reason))
  # Edge and server on one thread, set before JAX is first imported.
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false"
                             " intra_op_parallelism_threads=1")
  # Imported here: JAX must see the flags above, and the table code and
  # the no-root message need none of it.
  from experiments import latency_compute  # pylint: disable=g-import-not-at-top

  results_json = args.results or args.checkpoint_dir.parent / "results.json"
  top1_known = top1_from_results(results_json)
  start = time.perf_counter()
  litert = args.edge == "litert" or (args.edge == "auto"
                                     and latency_compute.litert_available())
  with tempfile.TemporaryDirectory() as exports:
    rows, payloads, labels = latency_compute.measure_all(
        args.checkpoint_dir, args.data_dir, args.images, args.repeats,
        args.quick, Path(exports) if litert else None)
  print(f"compute measured in {time.perf_counter() - start:.0f} s; sending"
        " payloads", flush=True)
  shaped = not (reason or args.loopback)
  servers = {} if args.no_http else {
      i: args.checkpoint_dir / row["model"] for i, row in enumerate(rows)
      if row["method"] in HTTP_METHODS and row["model"]}
  transfers, http, qdisc = measure_link(payloads, args.rates, args.repeats,
                                        not shaped, servers)
  for i, row in enumerate(rows):
    row["top1"] = top1_known.get((row["method"], row["setting"]))
    row["links"] = {
        f"{r:g}": {
            "measured_ms": statistics.fmean(transfers[i][f"{r:g}"]),
            "computed_ms": computed_ms(row["bytes_per_image"], r)}
        for r in args.rates}
    if i in http:
      row["http"] = {rate: http_summary(answers, labels)
                     for rate, answers in http[i].items()}
      # The server's own clock (decode + model, from its timings_ms) is
      # the server time; the in-process one stays in server_parts_ms.
      row["server_parts_ms"]["in_process"] = row["server_ms"]
      # Decode averaged, the forward pass's best (as `latency_compute`).
      h = row["http"].values()
      row["server_ms"] = (statistics.fmean(x["server_decode_ms"] for x in h)
                          + min(x["server_model_best_ms"] for x in h))
      row["server_source"] = "the server's timings_ms (decode + model)"
    else:
      row["server_source"] = "in-process"
    add_totals(row, shaped)
  results = {
      "rates_mbit": list(args.rates), "images": args.images,
      "repeats": args.repeats,
      "transfer": "shaped" if shaped else "loopback (unshaped)",
      "http": ("the real server (python -m hecsb_jax.serve, batching off) in"
               " the server namespace, for " + ", ".join(HTTP_METHODS))
              if servers else "not run",
      "qdisc": qdisc,
      "edge_impl": (latency_compute.EDGE_LITERT if litert
                    else latency_compute.EDGE_JAX),
      "top1_source": (f"{results_json} (its holdout images)" if top1_known
                      else "none found; see top1_sent"),
      "machine": latency_compute.machine(),
      "rows": rows,
  }
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  (args.out / "results.md").write_text(describe(results))
  plot(results, args.out / "latency.png")
  print(markdown(results))
  print(f"wrote {args.out}/results.json, results.md, latency.png")
  return results


if __name__ == "__main__":
  main()
