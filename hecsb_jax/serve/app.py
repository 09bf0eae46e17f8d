"""The inference server's ASGI app: container bytes in, a class out.

    POST /v1/predict (Bearer token, application/x-hecsb, one container)
      ─► token ─► content type ─► body, read with a size cap and a deadline
      ─► coding.read_header: model id, shape ─► coding.decompress
      ─► MicroBatcher ─► Predictor (jitted tail, one pass per batch)
      ─► {"model", "model_id", "class", "top5", "timings_ms", "batch"}
    GET /healthz, GET /metrics (Prometheus text), no token.

Every refusal is JSON {"error": ...} with the status of the HTTP contract
(docs/serve.md) and is counted by kind (`metrics.ERROR_KINDS`). The body
is checked before anything is allocated for it: a declared or streamed
size over the cap stops reading at once (413), and a header claiming a
shape other than the model's is refused from the header alone (422), so
a few bytes cannot make the server allocate gigabytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Route

from hecsb_jax import coding
from hecsb_jax.serve import batching
from hecsb_jax.serve import metrics as metrics_lib
from hecsb_jax.serve import predictor as predictor_lib

CONTENT_TYPE = "application/x-hecsb"
# A container of 28x28x32 symbols is a few KB; 1 MiB leaves room for any
# model this repository trains while keeping a flood of bodies cheap.
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT_S = 10.0
# Bytes past the cap read and dropped before a 413 (`_Server.read_body`).
DRAIN_BYTES = 64 * 1024
# Methods whose payload is `coding.compress` of int32 symbols.
CODED_METHODS = ("hecsb", "svb")


class RequestError(Exception):
  """A refused request: its HTTP status, error kind and message."""

  def __init__(self, status: int, kind: str, message: str, *,
               close: bool = False):
    super().__init__(message)
    self.status = status
    self.kind = kind
    self.message = message
    # The body was left partly unread: the connection cannot carry
    # another request.
    self.close = close


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """What `create_app` serves with.

  Attributes:
    token: the shared secret clients send as ``Bearer <token>``.
    max_body_bytes: largest body accepted (413 above).
    body_timeout_s: longest a body may take to arrive (408 after).
    max_batch: most images per forward pass (1: no batching).
    batch_wait_ms: longest a request waits for others to share its pass.
  """

  token: str
  max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
  body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
  max_batch: int = 16
  batch_wait_ms: float = 2.0

  def __post_init__(self):
    if not self.token or not self.token.strip():
      raise ValueError("the server needs a non-empty token")
    if self.max_body_bytes < 1:
      raise ValueError(f"max_body_bytes must be >= 1, got"
                       f" {self.max_body_bytes}")
    if self.body_timeout_s <= 0:
      raise ValueError(f"body_timeout_s must be > 0, got"
                       f" {self.body_timeout_s}")


def _error(status: int, message: str, **headers) -> JSONResponse:
  return JSONResponse({"error": message}, status_code=status,
                      headers=headers or None)


class _Server:
  """The state behind the routes: model, tables, batcher, metrics."""

  def __init__(self, model, config: ServerConfig, warm_up: bool,
               tables=None):
    if model.method not in CODED_METHODS or model.tables is None:
      raise ValueError(
          f"{model.name}: the server takes entropy-coded split models"
          f" ({', '.join(CODED_METHODS)}), not method {model.method!r}")
    self.model = model
    self.config = config
    self._token = config.token.strip().encode()
    # Other tables (an int8 export's) only change how payloads decode;
    # the tail, fed the decoded symbols, is the model's.
    self.tables = model.tables if tables is None else tables
    self.model_id = coding.model_id(self.tables)
    self.predictor = predictor_lib.Predictor(
        model.module, model.image_size, config.max_batch)
    self.shape = (1, *self.predictor.symbol_shape)
    if self.tables.num_channels != self.shape[-1]:
      raise ValueError(
          f"{model.name}: tables for {self.tables.num_channels} channels,"
          f" but the model's symbols have {self.shape[-1]}")
    if warm_up:
      self.predictor.warm_up()
    self.metrics = metrics_lib.ServerMetrics(config.max_batch)
    self.batcher = batching.MicroBatcher(
        self.predictor.predict, max_batch=config.max_batch,
        batch_wait_s=config.batch_wait_ms / 1000.0,
        on_batch=self.metrics.batch_size.observe)

  # ------------------------------------------------------------ checks

  def check_token(self, request: Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(
        " ")
    # compare_digest: the time taken does not tell how much matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), self._token):
      raise RequestError(401, "unauthorized",
                         "missing or wrong token: send 'Authorization:"
                         " Bearer <token>'")

  def check_content_type(self, request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind.lower() != CONTENT_TYPE:
      raise RequestError(415, "content_type",
                         f"content type {kind or '(none)'!r}: expected"
                         f" {CONTENT_TYPE}")

  async def read_body(self, request: Request) -> bytes:
    """The body, refused past max_body_bytes or body_timeout_s.

    Content-Length is only a first check: the cap is enforced on the bytes
    that actually arrive, which a client may send without a length
    (chunked). Past the cap nothing more is kept, but up to
    `DRAIN_BYTES` more are read and dropped: a client still sending when
    the server closes would get a TCP reset instead of the 413, so a
    modest excess is swallowed and the connection stays usable, and only
    a larger one closes it.
    """
    limit = self.config.max_body_bytes
    declared = request.headers.get("content-length", "")
    declared = int(declared) if declared.isdigit() else None
    size = f"{declared} bytes" if declared is not None else "body"

    def too_large(close):
      return RequestError(413, "too_large", f"{size} over the maximum of"
                          f" {limit} bytes", close=close)

    if declared is not None and declared > limit + DRAIN_BYTES:
      raise too_large(close=True)  # refused before a byte of it is read
    body = bytearray()
    received = 0
    try:
      async with asyncio.timeout(self.config.body_timeout_s):
        async for chunk in request.stream():
          received += len(chunk)
          if received > limit + DRAIN_BYTES:
            raise too_large(close=True)
          if received > limit:
            body = None  # dropped: what follows is only drained
          elif body is not None:
            body += chunk
    except TimeoutError:
      if received > limit:
        raise too_large(close=True) from None
      raise RequestError(408, "timeout", "body not received within"
                         f" {self.config.body_timeout_s:g} s",
                         close=True) from None
    if body is None:
      raise too_large(close=False)
    if not body:
      raise RequestError(400, "empty", "empty body: expected one image's"
                         " container (coding.compress)")
    return bytes(body)

  def decode(self, body: bytes):
    """Header checks, then the symbols [1, h, w, m] int32."""
    try:
      header = coding.read_header(body)
    except coding.DecodeError as e:
      raise RequestError(400, "corrupt", f"not a valid container: {e}")
    if header.model_id != self.model_id:
      raise RequestError(409, "wrong_model",
                         f"payload made for model id {header.model_id.hex()};"
                         f" this server's is {self.model_id.hex()}"
                         f" ({self.model.name})")
    if header.shape != self.shape:
      raise RequestError(422, "wrong_shape",
                         f"header claims shape {list(header.shape)};"
                         f" this model takes {list(self.shape)}")
    try:
      return coding.decompress(body, self.tables)
    except coding.DecodeError as e:
      raise RequestError(400, "corrupt", f"corrupt payload: {e}")

  # ------------------------------------------------------------ routes

  async def predict(self, request: Request) -> Response:
    start = time.perf_counter()
    self.check_token(request)
    self.check_content_type(request)
    body = await self.read_body(request)
    t = time.perf_counter()
    symbols = self.decode(body)
    decode_s = time.perf_counter() - t
    result = await self.batcher.submit(symbols)
    p = result.value
    total_s = time.perf_counter() - start
    return JSONResponse({
        "model": self.model.name,
        "model_id": self.model_id.hex(),
        "class": int(p.top_classes[0]),
        "top5": [[int(c), float(v)]
                 for c, v in zip(p.top_classes, p.top_probabilities)],
        "timings_ms": {"queue": result.queue_s * 1e3,
                       "decode": decode_s * 1e3,
                       "model": result.run_s * 1e3,
                       "total": total_s * 1e3},
        "batch": result.batch,
    })

  async def healthz(self, request: Request) -> Response:
    return JSONResponse({"status": "ok", "model": self.model.name,
                         "model_id": self.model_id.hex()})

  async def metrics_route(self, request: Request) -> Response:
    body, content_type = self.metrics.exposition()
    return Response(body, media_type=content_type)


_ROUTE_NAMES = {"/v1/predict": "predict", "/healthz": "healthz",
                "/metrics": "metrics"}
_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed"}


class _Observed:
  """ASGI middleware: counts every answer by status and times it."""

  def __init__(self, app, server: _Server):
    self.app = app
    self.server = server

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    start = time.perf_counter()
    status = 500  # what the client gets if the app raises

    async def send_observed(message):
      nonlocal status
      if message["type"] == "http.response.start":
        status = message["status"]
      await send(message)

    try:
      await self.app(scope, receive, send_observed)
    finally:
      m = self.server.metrics
      m.requests.labels(status=str(status)).inc()
      m.latency.labels(route=_ROUTE_NAMES.get(scope["path"], "other")
                       ).observe(time.perf_counter() - start)


def create_app(model, token: str, *, max_body_bytes=DEFAULT_MAX_BODY_BYTES,
               body_timeout_s=DEFAULT_BODY_TIMEOUT_S, max_batch=16,
               batch_wait_ms=2.0, batching_enabled=True, warm_up=True,
               tables=None):
  """The ASGI app serving `model` (uvicorn runs it; tests call it).

  Args:
    model: a `saved_model.SavedModel` of an entropy-coded split method
      (or an object with its ``module``, ``tables``, ``method``, ``name``
      and ``image_size``).
    token: the shared secret (compared with hmac.compare_digest).
    max_body_bytes: largest body accepted.
    body_timeout_s: longest a body may take to arrive.
    max_batch: most images per forward pass.
    batch_wait_ms: longest a request waits for others to share its pass.
    batching_enabled: False runs one pass per request (max_batch 1).
    warm_up: compile every batch size before serving (False only for
      tests that never predict).
    tables: `CodingTables` to decode payloads with instead of the
      model's (an int8 export's, hecsb_jax/export/int8.py); the server's
      model id is theirs.

  Returns:
    a Starlette app; its ``state.server`` holds the metrics and predictor.
  """
  config = ServerConfig(
      token=token, max_body_bytes=max_body_bytes,
      body_timeout_s=body_timeout_s,
      max_batch=max_batch if batching_enabled else 1,
      batch_wait_ms=batch_wait_ms if batching_enabled else 0.0)
  server = _Server(model, config, warm_up, tables)

  async def predict(request: Request) -> Response:
    try:
      return await server.predict(request)
    except RequestError as e:
      server.metrics.error(e.kind)
      close = {"connection": "close"} if e.close else {}
      return _error(e.status, e.message, **close)
    except ClientDisconnect:
      return Response(status_code=499)  # nobody reads it; counted as such

  async def http_error(request: Request, exc: HTTPException) -> Response:
    kind = _HTTP_KINDS.get(exc.status_code)
    if kind is not None:
      server.metrics.error(kind)
    return _error(exc.status_code, exc.detail or "error",
                  **(exc.headers or {}))

  async def internal_error(request: Request, exc: Exception) -> Response:
    server.metrics.error("internal")
    return _error(500, f"internal error: {type(exc).__name__}")

  @contextlib.asynccontextmanager
  async def lifespan(app):
    await server.batcher.start()
    try:
      yield
    finally:
      await server.batcher.stop()

  app = Starlette(
      routes=[
          Route("/v1/predict", predict, methods=["POST"]),
          Route("/healthz", server.healthz, methods=["GET"]),
          Route("/metrics", server.metrics_route, methods=["GET"]),
      ],
      exception_handlers={HTTPException: http_error,
                          Exception: internal_error},
      lifespan=lifespan,
  )
  app.state.server = server
  app.add_middleware(_Observed, server=server)
  return app
