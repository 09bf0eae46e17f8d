"""The server live under uvicorn on 127.0.0.1 (a thread of this process):
every refusal of the HTTP contract, a stalled and an oversized body over
raw sockets, while well-formed clients in parallel keep getting answers
equal to the offline prediction; memory stays flat; the metrics count
each answer; and a small load run loses nothing."""

import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
import psutil
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_fixtures as fx  # pylint: disable=wrong-import-position

from hecsb_jax.serve import app as app_lib  # pylint: disable=wrong-import-position

MAX_BODY = 4096
BODY_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def model():
  return fx.tiny_model()


@pytest.fixture(scope="module")
def payloads(model):
  return fx.make_payloads(model)


@pytest.fixture(scope="module")
def live(model):
  """(base URL, app) of a uvicorn serving the tiny model on a free port."""
  app = app_lib.create_app(model, fx.TOKEN, max_batch=4, batch_wait_ms=2,
                           max_body_bytes=MAX_BODY,
                           body_timeout_s=BODY_TIMEOUT_S)
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind(("127.0.0.1", 0))
  port = sock.getsockname()[1]
  config = uvicorn.Config(app, http="h11", log_level="warning",
                          access_log=False, timeout_keep_alive=5,
                          h11_max_incomplete_event_size=16 * 1024)
  server = uvicorn.Server(config)
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                            daemon=True)
  thread.start()
  deadline = time.monotonic() + 60
  while not server.started:
    assert thread.is_alive(), "uvicorn exited during start-up"
    assert time.monotonic() < deadline, "uvicorn did not start in 60 s"
    time.sleep(0.05)
  yield f"http://127.0.0.1:{port}", app
  server.should_exit = True
  thread.join(15)
  sock.close()


def raw_exchange(port, head: bytes, body: bytes, timeout_s=10.0) -> bytes:
  """Sends `head` + `body` and then nothing more; returns all it reads
  until the server closes (or timeout_s)."""
  with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
    s.sendall(head + body)
    out = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      try:
        chunk = s.recv(65536)
      except socket.timeout:
        break
      if not chunk:
        break
      out += chunk
  return out


def post_head(port, length: int) -> bytes:
  return (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
          f"Authorization: Bearer {fx.TOKEN}\r\n"
          f"Content-Type: {app_lib.CONTENT_TYPE}\r\n"
          f"Content-Length: {length}\r\n\r\n").encode()


async def good_client(url, payloads, model, stop, results, limit=400):
  """Posts the payloads in turn until `stop` (at most `limit`), checking
  each answer; appends ("ok" | the problem) to results."""
  async with httpx.AsyncClient(base_url=url, timeout=30) as client:
    for i in range(limit):
      if stop.is_set():
        return
      data, probs = payloads[i % len(payloads)]
      r = await client.post("/v1/predict", content=data, headers=fx.AUTH)
      try:
        assert r.status_code == 200, r.text
        fx.assert_matches_offline(r.json(), probs, model)
        results.append("ok")
      except AssertionError as e:
        results.append(f"request {i}: {e}")


def scrape(url):
  text = httpx.get(f"{url}/metrics", timeout=10).text
  families = {f.name: f for f in text_string_to_metric_families(text)}
  errors = {s.labels["kind"]: s.value for s in families["hecsb_errors"]
            .samples if s.name == "hecsb_errors_total"}
  statuses = {s.labels["status"]: s.value
              for s in families["hecsb_requests"].samples
              if s.name == "hecsb_requests_total"}
  return errors, statuses


@pytest.mark.slow
def test_faults_refused_while_good_clients_get_right_answers(
    live, model, payloads):
  url, app = live
  port = int(url.rsplit(":", 1)[1])
  errors_before, _ = scrape(url)
  rounds = 6
  sent = {}
  rss = []

  async def faults(stop):
    try:
      async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for round_ in range(rounds):
          if round_ >= 1:  # after a warm-up round
            rss.append(psutil.Process().memory_info().rss)
          for name, status, kind, kwargs in fx.fault_requests(
              model, payloads[0][0], MAX_BODY):
            if kind == "timeout":
              # httpx sends the whole body before it reads an answer, so
              # over a socket it sees the close, not the 408; the raw
              # socket below reads the 408 of a stalled body instead.
              continue
            kwargs = dict(kwargs)
            try:
              r = await client.request(kwargs.pop("method"),
                                       kwargs.pop("url"), **kwargs)
            except httpx.HTTPError as e:
              raise AssertionError(f"{name}: {e!r}") from e
            assert r.status_code == status, (name, r.status_code, r.text)
            assert r.json()["error"], name
            sent[kind] = sent.get(kind, 0) + 1
          # Over raw sockets: a body that stalls, a declared body far over
          # the cap (refused before it is sent).
          stalled = await asyncio.to_thread(
              raw_exchange, port, post_head(port, 100), b"HJRC" * 3)
          assert stalled.startswith(b"HTTP/1.1 408"), stalled[:200]
          assert b"connection: close" in stalled.lower()
          huge = await asyncio.to_thread(
              raw_exchange, port, post_head(port, 10**12), b"")
          assert huge.startswith(b"HTTP/1.1 413"), huge[:200]
          sent["timeout"] = sent.get("timeout", 0) + 1
          sent["too_large"] += 1
        rss.append(psutil.Process().memory_info().rss)
    finally:
      stop.set()

  async def main():
    stop = asyncio.Event()
    results = []
    clients = [good_client(url, payloads, model, stop, results)
               for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(faults(stop), *clients), 240)
    return results

  results = asyncio.run(main())
  problems = [r for r in results if r != "ok"]
  assert not problems, problems[:5]
  assert len(results) >= 10, "the good clients got too few answers"
  # Memory: the process (server and clients) after the warm-up round and
  # after the last: bounded well below what a leak per request would add.
  growth_mb = (rss[-1] - rss[0]) / 2**20
  assert growth_mb < 32, f"RSS grew {growth_mb:.1f} MiB: {rss}"
  errors_after, _ = scrape(url)
  counted = {k: errors_after[k] - errors_before.get(k, 0)
             for k in errors_after}
  assert {k: v for k, v in counted.items() if v} == sent


@pytest.mark.slow
def test_load_run_loses_nothing(live, model, payloads):
  url, app = live
  _, before = scrape(url)
  clients, per_client = 4, 25

  async def one_client(c):
    answers = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
      for i in range(per_client):
        data, probs = payloads[(c + i) % len(payloads)]
        r = await client.post("/v1/predict", content=data, headers=fx.AUTH)
        assert r.status_code == 200, r.text
        # Persistent connection: nothing asks to close it.
        assert r.headers.get("connection", "").lower() != "close"
        fx.assert_matches_offline(r.json(), probs, model)
        answers.append(r.json()["batch"])
    return answers

  async def main():
    return await asyncio.wait_for(
        asyncio.gather(*(one_client(c) for c in range(clients))), 240)

  batches = asyncio.run(main())
  assert sum(len(b) for b in batches) == clients * per_client
  _, after = scrape(url)
  # + 1: the first scrape is counted once it has answered.
  assert after["200"] - before.get("200", 0) == clients * per_client + 1
  assert all(1 <= b <= 4 for bs in batches for b in bs)
