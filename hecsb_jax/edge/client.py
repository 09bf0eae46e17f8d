"""The edge client: image -> LiteRT head -> rANS coder -> HTTP -> prediction.

    with EdgeClient("export/hecsb_beta0.0003", "http://server:8000",
                    token) as client:
      result = client.predict("cat.jpg")
      result.label, result.top5, result.num_bytes, result.timings_ms

    image file ──► preprocess (Pillow: shorter side 256, centre crop 224)
               ──► head (.tflite under LiteRT, normalization inside)
               ──► coding.compress (container "HJRC" + model id + shape)
               ──► POST /v1/predict (persistent connection, bearer token)
               ◄── {"class", "top5", "timings_ms": {..., "total"}, ...}

Stage times are wall clocks on this device; "server" is the server's own
``timings_ms.total`` and "network" the round trip less that (transfer,
connection handling, JSON), so the five stages add up to the total.

numpy, Pillow, LiteRT, httpx and hecsb_jax.coding only: no JAX.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import time

import httpx
import numpy as np

from hecsb_jax import coding
from hecsb_jax.edge import head as head_lib
from hecsb_jax.edge import manifest as manifest_lib
from hecsb_jax.edge import preprocess

CONTENT_TYPE = "application/x-hecsb"
PREDICT_PATH = "/v1/predict"
HEALTH_PATH = "/healthz"
STAGES = ("preprocess", "head", "coding", "network", "server")


class ClientError(RuntimeError):
  """A failure the user can act on; the message says what and where."""


class ServerError(ClientError):
  """The server answered with an error status.

  Attributes:
    status: the HTTP status code.
    message: the server's {"error": ...} text (or the body's start).
  """

  def __init__(self, url: str, status: int, message: str):
    super().__init__(f"{url}: HTTP {status}: {message}")
    self.status = status
    self.message = message


@dataclasses.dataclass
class Encoded:
  """One image as the device sends it.

  Attributes:
    pixels: uint8 [size, size, 3], the centre crop.
    symbols: int32 [1, *shape], the head's output.
    data: the container bytes of `coding.compress`.
    timings_ms: {"preprocess", "head", "coding"} wall clock, ms.
  """

  pixels: np.ndarray
  symbols: np.ndarray
  data: bytes
  timings_ms: dict[str, float]


@dataclasses.dataclass
class Prediction:
  """The server's answer for one image, with this device's stage times.

  Attributes:
    image: the image path.
    label: the predicted class.
    top5: [(class, probability)] best first.
    num_bytes: bytes sent (the container).
    model: the server's model name.
    batch: how many images the server ran together with this one.
    timings_ms: STAGES plus "total", ms (see the module docstring).
    server_timings_ms: the server's own breakdown (queue, decode, ...).
  """

  image: str
  label: int
  top5: list[tuple[int, float]]
  num_bytes: int
  model: str
  batch: int
  timings_ms: dict[str, float]
  server_timings_ms: dict[str, float]

  def to_dict(self) -> dict:
    """JSON-ready; the class is under "class", as in the server's answer."""
    d = dataclasses.asdict(self)
    d["class"] = d.pop("label")
    d["top5"] = [list(p) for p in self.top5]
    return d


def _ms(start: float) -> float:
  return (time.perf_counter() - start) * 1e3


def read_token(token_file: str | os.PathLike) -> str:
  """The first line of a token file, stripped.

  Raises:
    ClientError: the file is missing or empty (named).
  """
  path = Path(token_file)
  if not path.is_file():
    raise ClientError(f"{path}: token file not found")
  token = path.read_text().strip()
  if not token:
    raise ClientError(f"{path}: token file is empty")
  return token


class EdgeClient:
  """Runs exported heads on images and asks a server for predictions."""

  def __init__(self, export_dir: str | os.PathLike, server_url: str,
               token: str, *, num_threads: int = 1,
               timeout_s: float = 30.0):
    """Loads the export (manifest, tables, head) and opens a connection pool.

    Args:
      export_dir: a folder written by `python -m hecsb_jax.export`.
      server_url: e.g. "http://127.0.0.1:8000".
      token: the server's bearer token.
      num_threads: LiteRT CPU threads.
      timeout_s: per-request timeout (connect, read and write).

    Raises:
      ClientError: the export folder or one of its files is missing or
        invalid, or the tables do not belong to the manifest's model.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
      raise ClientError(f"{export_dir}: export folder not found")
    try:
      self.manifest = manifest_lib.load_manifest(export_dir)
      tables_path = self.manifest.path("tables")
      if not tables_path.is_file():
        raise FileNotFoundError(f"{tables_path}: tables not found")
      self.tables = coding.load_tables(tables_path)
      self.head = head_lib.Head.from_manifest(self.manifest, num_threads)
    except (OSError, ValueError, head_lib.HeadError) as e:
      raise ClientError(str(e)) from e
    got = coding.model_id(self.tables).hex()
    if got != self.manifest.model_id:
      raise ClientError(f"{tables_path}: model id {got}, but the manifest"
                        f" says {self.manifest.model_id}")
    self.server_url = server_url.rstrip("/")
    # One client for every request: keep-alive reuses the TCP connection.
    self._http = httpx.Client(
        base_url=self.server_url, timeout=timeout_s,
        headers={"Authorization": f"Bearer {token}"})

  def close(self) -> None:
    self._http.close()

  def __enter__(self) -> "EdgeClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def encode(self, image: str | os.PathLike) -> Encoded:
    """Preprocesses, runs the head and codes one image file.

    Raises:
      ClientError: the image is missing or not decodable (named).
    """
    spec = self.manifest.input
    start = time.perf_counter()
    try:
      pixels = preprocess.preprocess_file(image, spec.resize, spec.size,
                                          spec.interpolation)
    except (OSError, ValueError) as e:
      raise ClientError(str(e)) from e
    t_pre = _ms(start)
    start = time.perf_counter()
    symbols = self.head(pixels[None].astype(np.float32))
    t_head = _ms(start)
    start = time.perf_counter()
    data = coding.compress(symbols, self.tables)
    t_coding = _ms(start)
    return Encoded(pixels, symbols, data, {
        "preprocess": t_pre, "head": t_head, "coding": t_coding})

  def _request(self, method: str, path: str, **kwargs) -> dict:
    """One request; its JSON body, or ClientError / ServerError."""
    url = self.server_url + path
    try:
      response = self._http.request(method, path, **kwargs)
    except httpx.ConnectError as e:
      raise ClientError(f"{url}: cannot connect ({e}); is the server"
                        " running there?") from e
    except httpx.TimeoutException as e:
      raise ClientError(f"{url}: no answer in time ({e!r})") from e
    except httpx.HTTPError as e:
      raise ClientError(f"{url}: request failed: {e!r}") from e
    try:
      body = response.json()
    except ValueError:
      body = None
    if response.status_code != 200:
      message = (body.get("error") if isinstance(body, dict) else None
                 ) or response.text[:200] or response.reason_phrase
      raise ServerError(url, response.status_code, str(message))
    if not isinstance(body, dict):
      raise ClientError(f"{url}: expected a JSON object, got"
                        f" {response.text[:200]!r}")
    return body

  def health(self) -> dict:
    """GET /healthz: {"status", "model", "model_id"}."""
    return self._request("GET", HEALTH_PATH)

  def send(self, data: bytes) -> tuple[dict, float]:
    """POSTs one container; (response JSON, round trip ms)."""
    start = time.perf_counter()
    body = self._request("POST", PREDICT_PATH, content=data,
                         headers={"Content-Type": CONTENT_TYPE})
    return body, _ms(start)

  def predict(self, image: str | os.PathLike) -> Prediction:
    """Encodes one image, sends it, returns the server's prediction.

    Raises:
      ClientError: a missing image, a connection failure or a malformed
        answer; ServerError (a ClientError) for an error status.
    """
    return self.predict_encoded(image, self.encode(image))

  def predict_encoded(self, image: str | os.PathLike,
                      encoded: Encoded) -> Prediction:
    """Sends an `encode`d image; the server's prediction (as `predict`)."""
    body, round_trip = self.send(encoded.data)
    url = self.server_url + PREDICT_PATH
    try:
      server = {k: float(v) for k, v in body["timings_ms"].items()}
      label = int(body["class"])
      top5 = [(int(c), float(p)) for c, p in body["top5"]]
      server_total = server["total"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise ClientError(f"{url}: unexpected response {body!r} ({e!r})"
                        ) from e
    timings = dict(encoded.timings_ms)
    timings["server"] = server_total
    timings["network"] = round_trip - server_total
    timings["total"] = sum(timings[s] for s in STAGES)
    return Prediction(str(image), label, top5, len(encoded.data),
                      str(body.get("model", "")), int(body.get("batch", 1)),
                      {s: timings[s] for s in (*STAGES, "total")}, server)
