"""Prometheus metrics of one server, on a registry of its own.

Each app gets its own `CollectorRegistry` (not prometheus_client's global
one), so that tests and benchmarks can build several apps in one process
and read each one's counts alone. Every label takes values from a fixed
set (HTTP statuses, `ERROR_KINDS`), so bad input cannot grow the metrics
without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

# The kinds of refused request, one per error answer of the HTTP contract
# (docs/serve.md); "internal" is a failure of the server itself.
ERROR_KINDS = (
    "unauthorized",
    "too_large",
    "content_type",
    "empty",
    "corrupt",
    "wrong_model",
    "wrong_shape",
    "timeout",
    "not_found",
    "method_not_allowed",
    "internal",
)

# Latency from a few hundred microseconds (a refused request) to seconds (a
# forward pass queued behind others on a loaded CPU).
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)


class ServerMetrics:
  """The counters and histograms `app.create_app` updates.

  Attributes:
    registry: the registry `exposition` reads.
    requests: requests answered, by HTTP status.
    errors: refused or failed requests, by kind (`ERROR_KINDS`).
    latency: seconds from the request's start to its answer, by route
      ("predict", "healthz", "metrics", "other").
    batch_size: images per forward pass (before padding).
  """

  def __init__(self, max_batch: int):
    self.registry = CollectorRegistry()
    self.requests = Counter(
        "hecsb_requests", "Requests answered, by HTTP status.", ["status"],
        registry=self.registry)
    self.errors = Counter(
        "hecsb_errors", "Refused or failed requests, by kind.", ["kind"],
        registry=self.registry)
    self.latency = Histogram(
        "hecsb_request_latency_seconds",
        "Time from a request's start to its answer.", ["route"],
        buckets=LATENCY_BUCKETS_S, registry=self.registry)
    buckets = []
    b = 1
    while b < max_batch:
      buckets.append(b)
      b *= 2
    buckets.append(max_batch)
    self.batch_size = Histogram(
        "hecsb_batch_size", "Images per forward pass (before padding).",
        buckets=buckets, registry=self.registry)
    # Every kind shows from the start (at 0), so a scrape can tell "none
    # yet" from "not counted".
    for kind in ERROR_KINDS:
      self.errors.labels(kind=kind)

  def error(self, kind: str) -> None:
    """Counts one error of `kind` (a member of `ERROR_KINDS`)."""
    if kind not in ERROR_KINDS:
      raise ValueError(f"unknown error kind {kind!r}: expected one of"
                       f" {ERROR_KINDS}")
    self.errors.labels(kind=kind).inc()

  def exposition(self) -> tuple[bytes, str]:
    """(body, content type) in Prometheus's text exposition format."""
    return generate_latest(self.registry), CONTENT_TYPE_LATEST
