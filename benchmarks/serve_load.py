"""Load on the inference server over loopback, with and without batching.

    python benchmarks/serve_load.py [MODEL_DIR] [--data-dir ../shared/data]
        [--clients 16 --requests 200 --quick --json out.json]

For each mode it starts `python -m hecsb_jax.serve MODEL_DIR` in a
subprocess on 127.0.0.1 (batching: --max-batch 16 --batch-wait-ms 2; the
reference: --no-batching, one forward pass per request), waits for
/healthz, and runs `--clients` concurrent clients, each on one persistent
connection, posting `--requests` payloads each. The payloads are the real
edge's: holdout images, resized and centre-cropped as in evaluation, the
model's head, `coding.compress`. Every answer is checked against the offline
prediction softmax(logits_from_symbols(decompress(payload))); a request
that fails, times out or answers wrongly is counted, never retried.
Latency is the client's clock per request; throughput is answers per
second of wall time of the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import secrets
import socket
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "runs/split_rd_v2/ckpt/hecsb_beta0.0003"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
PROB_TOL = 1e-4  # batch-16 and batch-1 passes differ by float rounding only


def payloads_from_holdout(model, data_dir: Path, count: int):
  """(container bytes, offline probabilities [K]) for `count` images."""
  from flax import nnx
  import jax
  from PIL import Image

  from hecsb_jax import coding
  from hecsb_jax.data import imagenet_folder
  from hecsb_jax.data import imagenet_pipeline

  folder = data_dir / "imagenet_samples"
  examples = imagenet_folder.read_split(folder, "holdout")[:count]
  if not examples:
    raise SystemExit(f"{folder}: no holdout images")
  images = np.stack([
      imagenet_pipeline.resize_center_crop(
          Image.open(e.path).convert("RGB"), 256, model.image_size,
          model.interpolation) for e in examples])
  edge = nnx.jit(lambda m, x: m.edge_symbols(x))
  server = nnx.jit(lambda m, s: jax.nn.softmax(m.logits_from_symbols(s)))
  payloads = []
  for i in range(0, len(images), 16):
    symbols = np.asarray(edge(model.module, model.normalize(images[i:i + 16])))
    data = [coding.compress(symbols[j:j + 1], model.tables)
            for j in range(len(symbols))]
    back = np.concatenate([coding.decompress(d, model.tables) for d in data])
    probs = np.asarray(server(model.module, back))
    payloads += list(zip(data, probs))
  return payloads


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_server(model_dir, token, port, extra, timeout_s=600):
  """The server subprocess, once /healthz answers."""
  import httpx

  env = dict(os.environ, HECSB_TOKEN=token)
  proc = subprocess.Popen(
      [sys.executable, "-m", "hecsb_jax.serve", str(model_dir), "--host",
       "127.0.0.1", "--port", str(port), *extra], env=env, cwd=REPO_ROOT)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise SystemExit(f"server exited with {proc.returncode} at start")
    try:
      if httpx.get(f"http://127.0.0.1:{port}/healthz",
                   timeout=2).status_code == 200:
        return proc
    except httpx.HTTPError:
      pass
    time.sleep(0.5)
  proc.kill()
  raise SystemExit(f"server not healthy within {timeout_s} s")


def check(answer: dict, probs: np.ndarray) -> str | None:
  """None if `answer` is the offline prediction, else what differs."""
  classes = [c for c, _ in answer["top5"]]
  values = np.array([p for _, p in answer["top5"]])
  if not np.allclose(values, probs[classes], atol=PROB_TOL):
    return f"top-5 probabilities {values} != offline {probs[classes]}"
  if not np.allclose(values, np.sort(probs)[::-1][:5], atol=PROB_TOL):
    return "top-5 classes are not the offline top-5"
  if answer["class"] != classes[0]:
    return "class is not the first of top5"
  return None


async def run_clients(url, token, payloads, clients, requests):
  import httpx

  headers = {"authorization": f"Bearer {token}",
             "content-type": "application/x-hecsb"}
  latencies, batches, lost, wrong = [], [], [], []

  async def client(c):
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=limits) as http:
      for i in range(requests):
        data, probs = payloads[(c * requests + i) % len(payloads)]
        t = time.perf_counter()
        try:
          r = await http.post("/v1/predict", content=data, headers=headers)
        except httpx.HTTPError as e:
          lost.append(repr(e))
          continue
        latencies.append(time.perf_counter() - t)
        if r.status_code != 200:
          lost.append(f"{r.status_code} {r.text[:200]}")
          continue
        problem = check(r.json(), probs)
        if problem:
          wrong.append(problem)
        batches.append(r.json()["batch"])

  start = time.perf_counter()
  await asyncio.gather(*(client(c) for c in range(clients)))
  wall_s = time.perf_counter() - start
  ms = np.array(latencies) * 1e3
  return {
      "requests": clients * requests, "ok": len(batches) - len(wrong),
      "lost": len(lost),
      "wrong": len(wrong), "wall_s": wall_s,
      "throughput_per_s": len(batches) / wall_s,
      "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
      "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
      "mean_batch": float(np.mean(batches)) if batches else None,
      "examples": (lost + wrong)[:3],
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("model_dir", nargs="?", default=str(DEFAULT_MODEL))
  p.add_argument("--data-dir", default=str(DEFAULT_DATA))
  p.add_argument("--clients", type=int, default=16)
  p.add_argument("--requests", type=int, default=200,
                 help="requests per client")
  p.add_argument("--images", type=int, default=64,
                 help="distinct holdout images (payloads cycle)")
  p.add_argument("--max-batch", type=int, default=16)
  p.add_argument("--batch-wait-ms", type=float, default=2.0)
  p.add_argument("--quick", action="store_true",
                 help="16 clients x 10 requests, 16 images")
  p.add_argument("--json", help="write the results here")
  args = p.parse_args(argv)
  if args.quick:
    args.requests, args.images = 10, 16

  from hecsb_jax.train import saved_model

  model = saved_model.load(args.model_dir)
  payloads = payloads_from_holdout(model, Path(args.data_dir), args.images)
  mean_bytes = float(np.mean([len(d) for d, _ in payloads]))
  del model  # the servers load their own copy
  token = secrets.token_hex(16)
  modes = {
      "batching": ["--batching", "on", "--max-batch", str(args.max_batch),
                   "--batch-wait-ms", str(args.batch_wait_ms)],
      "no batching": ["--no-batching"],
  }
  results = {}
  for name, extra in modes.items():
    port = free_port()
    proc = start_server(args.model_dir, token, port, extra)
    try:
      results[name] = asyncio.run(run_clients(
          f"http://127.0.0.1:{port}", token, payloads, args.clients,
          args.requests))
    finally:
      proc.terminate()
      try:
        proc.wait(30)
      except subprocess.TimeoutExpired:
        proc.kill()
  out = {"model": Path(args.model_dir).name, "clients": args.clients,
         "requests_per_client": args.requests, "images": len(payloads),
         "mean_payload_bytes": mean_bytes, "cpus": os.cpu_count(),
         "niceness": os.nice(0), "modes": results}
  print(f"{out['model']}: {args.clients} clients x {args.requests} requests,"
        f" {len(payloads)} holdout images ({mean_bytes:.0f} B per payload),"
        f" loopback, {os.cpu_count()} CPUs")
  print(f"{'':14}" + "".join(f"{n:>14}" for n in results))
  rows = [("answered ok", "ok", "{:.0f}"), ("lost", "lost", "{:.0f}"),
          ("wrong", "wrong", "{:.0f}"),
          ("throughput/s", "throughput_per_s", "{:.1f}"),
          ("p50 ms", "p50_ms", "{:.1f}"), ("p99 ms", "p99_ms", "{:.1f}"),
          ("mean batch", "mean_batch", "{:.2f}"),
          ("wall s", "wall_s", "{:.1f}")]
  for label, key, fmt in rows:
    print(f"{label:14}" + "".join(
        f"{(fmt.format(r[key]) if r[key] is not None else '-'):>14}"
        for r in results.values()))
  for name, r in results.items():
    for e in r["examples"]:
      print(f"{name}: {e}")
  if args.json:
    Path(args.json).write_text(json.dumps(out, indent=2))
  if any(r["lost"] or r["wrong"] for r in results.values()):
    raise SystemExit("requests lost or answered wrongly")


if __name__ == "__main__":
  main()
