"""python -m hecsb_jax.edge IMAGE... --export DIR --server URL --token-file F

Runs the exported head on each image, sends the coded symbols to the
server and prints its prediction and the time of each stage (see
`hecsb_jax.edge.client`). The token comes from --token-file, --token or
the environment variable HECSB_TOKEN, in that order. --json prints one
JSON object per image instead. Exit status: 0 when every image got a
prediction, 1 on the first error (its message on stderr), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hecsb_jax.edge import client as client_lib

TOKEN_ENV = "HECSB_TOKEN"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m hecsb_jax.edge",
      description="Edge client: image -> LiteRT head -> coder -> server.")
  p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
  p.add_argument("--export", required=True, metavar="DIR",
                 help="export folder (manifest.json, head.tflite, tables)")
  p.add_argument("--server", required=True, metavar="URL",
                 help="server base URL, e.g. http://127.0.0.1:8000")
  p.add_argument("--token-file", metavar="PATH",
                 help="file holding the bearer token")
  p.add_argument("--token", help=f"the bearer token (else ${TOKEN_ENV})")
  p.add_argument("--threads", type=int, default=1,
                 help="LiteRT CPU threads (default 1)")
  p.add_argument("--timeout", type=float, default=30.0,
                 help="per-request timeout in seconds (default 30)")
  p.add_argument("--json", action="store_true",
                 help="print one JSON object per image")
  return p.parse_args(argv)


def _token(args) -> str:
  if args.token_file:
    return client_lib.read_token(args.token_file)
  token = args.token or os.environ.get(TOKEN_ENV, "")
  if not token:
    raise client_lib.ClientError(
        f"no token: pass --token-file PATH, --token or set ${TOKEN_ENV}")
  return token


def format_prediction(p: client_lib.Prediction) -> str:
  """Two lines: the prediction, then the stage times."""
  top5 = ", ".join(f"{c} {prob:.3f}" for c, prob in p.top5)
  stages = ", ".join(f"{s} {p.timings_ms[s]:.1f}"
                     for s in (*client_lib.STAGES, "total"))
  return (f"{p.image}: class {p.label} ({p.num_bytes} bytes; top-5 {top5})"
          f"\n  ms: {stages} (server batch {p.batch})")


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    token = _token(args)
    missing = [i for i in args.images if not os.path.isfile(i)]
    if missing:
      raise client_lib.ClientError(
          "image not found: " + ", ".join(missing))
    with client_lib.EdgeClient(args.export, args.server, token,
                               num_threads=args.threads,
                               timeout_s=args.timeout) as client:
      for image in args.images:
        p = client.predict(image)
        print(json.dumps(p.to_dict()) if args.json
              else format_prediction(p), flush=True)
  except client_lib.ClientError as e:
    print(f"hecsb_jax.edge: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
