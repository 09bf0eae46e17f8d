"""Test fixtures for the edge client: a tiny export and a stand-in server.

`write_tiny_export` writes an export folder (manifest.json, head.tflite,
tables.npz) whose head is built directly as a TFLite flatbuffer (LiteRT's
own schema, object API), so the client's tests need neither JAX nor the
converter and run in milliseconds:

    float32 [1, 224, 224, 3] ─► AVERAGE_POOL_2D 8x8/8 ─► [1, 28, 28, 3]
      ─► CONV_2D 1x1, 32 filters ─► FLOOR ─► CAST int32 ─► [1, 28, 28, 32]

`tiny_head_reference` computes the same in numpy (float64, so a value
within rounding of an integer may floor differently; tests compare the
fraction equal).

`StandInServer` is a JAX-free HTTP server on a thread that implements the
predict contract (bearer token, content type, the container's model id and
shape, the JSON answer and error statuses) with `coding.decompress` and a
fixed linear "tail", for tests of the client alone.

The real pieces, for tests of the whole path (these import JAX, the
converter and the server when called, never at import, so the client's
tests stay JAX-free): `export_toy_model` exports the server tests' tiny
HECS-B model (tests/serve_fixtures.py) with `hecsb_jax.export`'s own
`export_model`, and `real_server` runs `hecsb_jax.serve`'s app on it under
uvicorn in a thread.
"""

from __future__ import annotations

import contextlib
import http.server
import json
from pathlib import Path
import socket
import threading
import time

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hecsb_jax import coding
from hecsb_jax.edge import manifest as manifest_lib
from hecsb_jax.entropy.tables import tables_from_pmf

SIZE, POOL, CHANNELS = 224, 8, 32
SYMBOL_SHAPE = (SIZE // POOL, SIZE // POOL, CHANNELS)
NUM_CLASSES = 10


def tiny_weights(seed: int = 0, channels: int = CHANNELS):
  """The 1x1 conv's (W [channels, 3] float32, b [channels] float32)."""
  rng = np.random.default_rng(seed)
  w = rng.uniform(-0.1, 0.1, (channels, 3)).astype(np.float32)
  b = rng.uniform(-2, 2, channels).astype(np.float32)
  return w, b


def tiny_head_reference(pixels: np.ndarray, seed: int = 0) -> np.ndarray:
  """numpy [1, 224, 224, 3] -> int32 [1, 28, 28, 32], as the .tflite."""
  w, b = tiny_weights(seed)
  x = np.asarray(pixels, np.float64).reshape(1, SIZE // POOL, POOL,
                                             SIZE // POOL, POOL, 3)
  pooled = x.mean(axis=(2, 4))
  return np.floor(pooled @ w.T.astype(np.float64) + b).astype(np.int32)


def _tensor(shape, tensor_type, buffer, name):
  t = schema.TensorT()
  t.shape = list(shape)
  t.type = tensor_type
  t.buffer = buffer
  t.name = name
  return t


def _buffer(data: bytes | None = None):
  b = schema.BufferT()
  if data is not None:
    b.data = list(data)
  return b


def tiny_tflite(seed: int = 0, input_size: int = SIZE, pool_size: int = POOL,
                channels: int = CHANNELS) -> bytes:
  """The flatbuffer of the head in the module docstring (or of its
  variant with another input size, pooling window and channel count)."""
  f32, i32 = schema.TensorType.FLOAT32, schema.TensorType.INT32
  w, b = tiny_weights(seed, channels)
  side = input_size // pool_size
  # Buffer 0 is the empty sentinel every TFLite model starts with.
  buffers = [_buffer(), _buffer(w.reshape(channels, 1, 1, 3).tobytes()),
             _buffer(b.tobytes())] + [_buffer() for _ in range(5)]
  tensors = [
      _tensor([1, input_size, input_size, 3], f32, 3, "pixels"),
      _tensor([channels, 1, 1, 3], f32, 1, "w"),
      _tensor([channels], f32, 2, "b"),
      _tensor([1, side, side, 3], f32, 4, "pooled"),
      _tensor([1, side, side, channels], f32, 5, "y"),
      _tensor([1, side, side, channels], f32, 6, "y_floor"),
      _tensor([1, side, side, channels], i32, 7, "symbols"),
  ]
  codes = []
  for op in (schema.BuiltinOperator.AVERAGE_POOL_2D,
             schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FLOOR,
             schema.BuiltinOperator.CAST):
    c = schema.OperatorCodeT()
    c.builtinCode = op
    c.deprecatedBuiltinCode = op
    c.version = 1
    codes.append(c)
  pool = schema.Pool2DOptionsT()
  pool.padding = schema.Padding.VALID
  pool.strideW = pool.strideH = pool_size
  pool.filterWidth = pool.filterHeight = pool_size
  conv = schema.Conv2DOptionsT()
  conv.padding = schema.Padding.VALID
  conv.strideW = conv.strideH = 1
  conv.dilationWFactor = conv.dilationHFactor = 1
  cast = schema.CastOptionsT()
  cast.inDataType, cast.outDataType = f32, i32
  ops = []
  for index, inputs, outputs, kind, options in (
      (0, [0], [3], schema.BuiltinOptions.Pool2DOptions, pool),
      (1, [3, 1, 2], [4], schema.BuiltinOptions.Conv2DOptions, conv),
      (2, [4], [5], schema.BuiltinOptions.NONE, None),
      (3, [5], [6], schema.BuiltinOptions.CastOptions, cast),
  ):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = index, inputs, outputs
    op.builtinOptionsType, op.builtinOptions = kind, options
    ops.append(op)
  graph = schema.SubGraphT()
  graph.tensors, graph.inputs, graph.outputs = tensors, [0], [6]
  graph.operators, graph.name = ops, "main"
  model = schema.ModelT()
  model.version, model.description = 3, "hecsb_jax test head"
  model.operatorCodes, model.subgraphs, model.buffers = codes, [graph], buffers
  import flatbuffers  # pylint: disable=import-outside-toplevel
  builder = flatbuffers.Builder(1024)
  builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
  return bytes(builder.Output())


def tiny_tables() -> coding.CodingTables:
  """Laplace-shaped tables over -40..40 for every channel."""
  k = np.arange(-40, 41)
  pmf = np.exp(-np.abs(k) / 8.0)
  pmf = np.tile(pmf / pmf.sum() * 0.999, (CHANNELS, 1))
  return tables_from_pmf(pmf, np.full(CHANNELS, -40), 16)


def write_tiny_export(directory, seed: int = 0, name: str = "tiny", *,
                      input_size: int = SIZE, resize: int = 256,
                      pool_size: int = POOL, channels: int = CHANNELS,
                      tables: coding.CodingTables | None = None):
  """Writes an export folder with the tiny head; returns its Manifest.

  The defaults give the contract's shapes (224 in, [28, 28, 32] out) and
  `tiny_tables`; other sizes and tables match another model's (e.g. the
  server tests' toy model, for the real server).
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "head.tflite").write_bytes(
      tiny_tflite(seed, input_size, pool_size, channels))
  tables = tiny_tables() if tables is None else tables
  tables.save_npz(directory / "tables.npz")
  side = input_size // pool_size
  manifest = manifest_lib.Manifest(
      model=name, method="hecsb", setting={"beta": 0.0003},
      model_id=coding.model_id(tables).hex(), backbone="test",
      split="pool8",
      input=manifest_lib.InputSpec(input_size, resize, "bicubic"),
      normalization=manifest_lib.Normalization((0.0,) * 3, (1.0,) * 3),
      symbols=manifest_lib.SymbolSpec((side, side, channels)))
  manifest.save(directory)
  return manifest_lib.load_manifest(directory)


def tail_logits(symbols: np.ndarray) -> np.ndarray:
  """The stand-in's "tail": per-channel means -> NUM_CLASSES logits."""
  means = symbols.reshape(-1, CHANNELS).astype(np.float64).mean(axis=0)
  return means[:NUM_CLASSES] - means[NUM_CLASSES:2 * NUM_CLASSES]


class StandInServer:
  """The HTTP contract of `hecsb_jax.serve` on a thread, without JAX.

  Attributes:
    url: "http://127.0.0.1:<port>".
    requests: containers received, in order.
    connections: TCP connections accepted (keep-alive keeps it at 1).
  """

  def __init__(self, tables: coding.CodingTables, token: str,
               name: str = "tiny", max_body: int = 1 << 20):
    self.tables, self.token, self.name = tables, token, name
    self.model_id = coding.model_id(tables)
    self.max_body = max_body
    self.requests: list[bytes] = []
    self.connections = 0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"  # keep-alive

      def setup(self):
        server.connections += 1
        super().setup()

      def log_message(self, *args):
        pass

      def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_GET(self):
        if self.path == "/healthz":
          self._send(200, {"status": "ok", "model": server.name,
                           "model_id": server.model_id.hex()})
        else:
          self._send(404, {"error": f"no route {self.path}"})

      def do_POST(self):
        start = time.perf_counter()
        length = int(self.headers.get("Content-Length", 0))
        data = self.rfile.read(length)
        if self.path != "/v1/predict":
          return self._send(404, {"error": f"no route {self.path}"})
        if self.headers.get("Authorization") != f"Bearer {server.token}":
          return self._send(401, {"error": "missing or wrong token"})
        if self.headers.get("Content-Type") != "application/x-hecsb":
          return self._send(415, {"error": "expected application/x-hecsb"})
        if length > server.max_body:
          return self._send(413, {"error": f"body over {server.max_body}"})
        if not data:
          return self._send(400, {"error": "empty body"})
        try:
          header = coding.read_header(data)
          if header.model_id != server.model_id:
            return self._send(409, {"error": "payload for another model"})
          if tuple(header.shape) != (1, *SYMBOL_SHAPE):
            return self._send(422, {"error": f"shape {header.shape}"})
          symbols = coding.decompress(data, server.tables)
        except coding.DecodeError as e:
          return self._send(400, {"error": f"corrupt container: {e}"})
        server.requests.append(data)
        logits = tail_logits(symbols)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top5 = [[int(c), float(p[c])] for c in np.argsort(-p)[:5]]
        total = (time.perf_counter() - start) * 1e3
        self._send(200, {
            "model": server.name, "model_id": server.model_id.hex(),
            "class": top5[0][0], "top5": top5, "batch": 1,
            "timings_ms": {"queue": 0.0, "decode": total, "model": 0.0,
                           "total": total}})

    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    daemon=True)

  def __enter__(self) -> "StandInServer":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._httpd.shutdown()
    self._httpd.server_close()


# ------------------------------------------------------------ real pieces


def export_toy_model(directory, name: str = "toy_hecsb"):
  """The server tests' tiny random HECS-B model, exported as a trained one.

  `serve_fixtures.tiny_model` (32x32 input, symbols [8, 8, 4]) through
  `hecsb_jax.export.folder.export_model`, the function `python -m
  hecsb_jax.export` runs after loading a folder: a converted head.tflite,
  its tables and manifest.json. About 10 s on 2 busy cores.

  Returns:
    (SavedModel, Manifest loaded from ``directory``).
  """
  import serve_fixtures  # pylint: disable=import-outside-toplevel
  from hecsb_jax.export import folder  # pylint: disable=import-outside-toplevel
  model = serve_fixtures.tiny_model(name)
  folder.export_model(model, directory, log=None)
  return model, manifest_lib.load_manifest(directory)


def jax_offline(model, pixels: np.ndarray):
  """What the JAX model gives for uint8 crops [B, S, S, 3], no export,
  no server: (symbols int32 [B, h, w, m] of `edge_symbols`, classes [B]
  of `logits_from_symbols` on them)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  x = model.normalize(pixels)
  symbols = np.asarray(nnx.jit(lambda m, x: m.edge_symbols(x))(
      model.module, x))
  logits = np.asarray(nnx.jit(lambda m, s: m.logits_from_symbols(s))(
      model.module, symbols))
  return symbols, logits.argmax(axis=-1)


@contextlib.contextmanager
def real_server(model, token: str, **app_kwargs):
  """`hecsb_jax.serve.app.create_app(model, token)` under uvicorn on a
  thread, on a free port of 127.0.0.1; yields its URL."""
  import uvicorn  # pylint: disable=import-outside-toplevel
  from hecsb_jax.serve import app as app_lib  # pylint: disable=import-outside-toplevel
  app = app_lib.create_app(model, token, **app_kwargs)
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                         access_log=False))
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                            daemon=True)
  thread.start()
  try:
    deadline = time.monotonic() + 120
    while not server.started:
      if not thread.is_alive():
        raise RuntimeError("uvicorn exited during start-up")
      if time.monotonic() > deadline:
        raise RuntimeError("uvicorn did not start in 120 s")
      time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
  finally:
    server.should_exit = True
    thread.join(15)
    sock.close()
