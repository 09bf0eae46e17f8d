"""python -m hecsb_jax.serve CHECKPOINT: the server under uvicorn.

    python -m hecsb_jax.serve runs/split_rd_v2/ckpt/hecsb_beta0.0003 \\
        [--host 127.0.0.1 --port 8000 --token-file PATH \\
         --max-body-bytes N --batching auto|on|off --max-batch 16 \\
         --batch-wait-ms 2 --tables PATH]

The token comes from --token-file (stripped) or the environment variable
HECSB_TOKEN; without one the server refuses to start. The model is loaded
and every batch size compiled before the port opens. --tables decodes
payloads with another export's tables (an int8 head's, DIR/int8/tables.npz
from `python -m hecsb_jax.export --int8`); the tail stays CHECKPOINT's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys

TOKEN_ENV = "HECSB_TOKEN"


def read_token(token_file: str | None, environ=os.environ) -> str:
  """The shared secret: the file's stripped text, else $HECSB_TOKEN.

  Raises:
    SystemExit: neither gives a non-empty token (the message says how to
      give one), or the file cannot be read.
  """
  if token_file is not None:
    path = Path(token_file)
    try:
      token = path.read_text().strip()
    except OSError as e:
      raise SystemExit(f"{path}: cannot read the token file ({e})") from None
    if not token:
      raise SystemExit(f"{path}: the token file is empty")
    return token
  token = environ.get(TOKEN_ENV, "").strip()
  if not token:
    raise SystemExit(
        f"no token: pass --token-file PATH or set {TOKEN_ENV}; the server"
        " does not run without one")
  return token


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m hecsb_jax.serve",
                              description=__doc__.split("\n")[0])
  p.add_argument("checkpoint", help="a model folder (saved_model.load)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--token-file", help=f"file holding the token (else"
                 f" ${TOKEN_ENV})")
  p.add_argument("--max-body-bytes", type=int, default=1 << 20)
  p.add_argument("--body-timeout-s", type=float, default=10.0,
                 help="a body not received in this time gets 408")
  p.add_argument("--max-batch", type=int, default=16)
  p.add_argument("--batch-wait-ms", type=float, default=2.0)
  p.add_argument(
      "--batching", choices=("auto", "on", "off"), default="auto",
      help="gather concurrent requests into one forward pass; auto: on"
      " an accelerator only (benchmarks/serve_load.py measured that on a"
      " CPU it lowers throughput: the tail costs the same per image at"
      " batch 1 as at 16)")
  p.add_argument("--no-batching", dest="batching", action="store_const",
                 const="off", help="same as --batching off")
  p.add_argument("--keep-alive-s", type=float, default=5.0,
                 help="idle time before a persistent connection closes")
  p.add_argument("--limit-concurrency", type=int, default=256,
                 help="connections + tasks before new ones get 503")
  p.add_argument("--tables", help="coding tables .npz to decode with"
                 " instead of CHECKPOINT's (e.g. an int8 export's"
                 " int8/tables.npz); the server's model id becomes theirs")
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  token = read_token(args.token_file)  # before the slow model load
  import jax
  import uvicorn

  from hecsb_jax import coding
  from hecsb_jax.train import saved_model
  from hecsb_jax.serve import app as app_lib

  batching = args.batching == "on" or (
      args.batching == "auto" and jax.default_backend() != "cpu")
  try:
    model = saved_model.load(args.checkpoint)
  except (FileNotFoundError, saved_model.SavedModelError) as e:
    raise SystemExit(str(e)) from None
  tables = None
  if args.tables is not None:
    try:
      tables = coding.load_tables(args.tables)
    except (OSError, ValueError) as e:
      raise SystemExit(f"{args.tables}: cannot read coding tables ({e})"
                       ) from None
  try:
    app = app_lib.create_app(
        model, token, max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout_s, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        batching_enabled=batching, tables=tables)
  except ValueError as e:  # e.g. tables for another channel count
    raise SystemExit(str(e)) from None
  uvicorn.run(app, host=args.host, port=args.port,
              timeout_keep_alive=args.keep_alive_s,
              limit_concurrency=args.limit_concurrency,
              # Header blocks are small; a huge one is refused by h11.
              http="h11", h11_max_incomplete_event_size=16 * 1024,
              timeout_graceful_shutdown=5, log_level="warning",
              access_log=False)


if __name__ == "__main__":
  main()
