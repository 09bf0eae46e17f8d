"""The inference server (hecsb_jax.serve) on a tiny random HECS-B model.

In-process through httpx's ASGITransport: answers equal the offline
prediction ``softmax(logits_from_symbols(decompress(payload)))``, batching
groups concurrent requests, every refusal of the HTTP contract has its
status, JSON message and metric, refusals allocate nothing in proportion
to what the header claims, and memory stays flat over repeated bad
requests. tests/test_serve_faults.py runs the same faults against a live
uvicorn.
"""

import asyncio
import dataclasses
import gc
import sys
from pathlib import Path
import tracemalloc

import httpx
from prometheus_client.parser import text_string_to_metric_families
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_fixtures as fx  # pylint: disable=wrong-import-position

from hecsb_jax import coding  # pylint: disable=wrong-import-position
from hecsb_jax.serve import __main__ as cli  # pylint: disable=wrong-import-position
from hecsb_jax.serve import app as app_lib  # pylint: disable=wrong-import-position
from hecsb_jax.serve import batching  # pylint: disable=wrong-import-position
from hecsb_jax.serve import predictor as predictor_lib  # pylint: disable=wrong-import-position

TOKEN, AUTH = fx.TOKEN, fx.AUTH
assert_matches_offline = fx.assert_matches_offline


@pytest.fixture(scope="module")
def model():
  return fx.tiny_model()


@pytest.fixture(scope="module")
def payloads(model):
  return fx.make_payloads(model)


def run_app(app, body):
  """Runs `body(client)` against `app` with its lifespan, returns its value."""

  async def main():
    async with app.router.lifespan_context(app):
      transport = httpx.ASGITransport(app=app)
      async with httpx.AsyncClient(transport=transport,
                                   base_url="http://test") as client:
        return await asyncio.wait_for(body(client), 60)

  return asyncio.run(main())


def error_counts(app):
  counter = app.state.server.metrics.errors
  return {k: counter.labels(kind=k)._value.get()
          for k in app_lib.metrics_lib.ERROR_KINDS}


# --------------------------------------------------------------- unit


def test_batch_buckets_are_powers_of_two_up_to_max_batch():
  assert predictor_lib.batch_buckets(1) == (1,)
  assert predictor_lib.batch_buckets(16) == (1, 2, 4, 8, 16)
  assert predictor_lib.batch_buckets(12) == (1, 2, 4, 8, 12)
  with pytest.raises(ValueError, match="max_batch"):
    predictor_lib.batch_buckets(0)


def test_micro_batcher_groups_concurrent_items_and_keeps_order():
  sizes = []

  async def main():
    b = batching.MicroBatcher(lambda xs: [x * 10 for x in xs], max_batch=4,
                              batch_wait_s=0.05, on_batch=sizes.append)
    await b.start()
    try:
      results = await asyncio.gather(*(b.submit(i) for i in range(10)))
    finally:
      await b.stop()
    return results

  results = asyncio.run(asyncio.wait_for(main(), 30))
  assert [r.value for r in results] == [i * 10 for i in range(10)]
  assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) == 3


def test_micro_batcher_passes_run_errors_to_every_waiter():
  async def main():
    def fail(xs):
      raise RuntimeError("boom")
    b = batching.MicroBatcher(fail, max_batch=4, batch_wait_s=0.01)
    await b.start()
    try:
      return await asyncio.gather(*(b.submit(i) for i in range(3)),
                                  return_exceptions=True)
    finally:
      await b.stop()

  results = asyncio.run(asyncio.wait_for(main(), 30))
  assert all(isinstance(r, RuntimeError) for r in results)


def test_token_comes_from_the_file_or_env_and_is_required(tmp_path):
  f = tmp_path / "token"
  f.write_text("  abc\n")
  assert cli.read_token(str(f), environ={}) == "abc"
  assert cli.read_token(None, environ={"HECSB_TOKEN": " xyz "}) == "xyz"
  with pytest.raises(SystemExit, match="HECSB_TOKEN"):
    cli.read_token(None, environ={})
  f.write_text("\n")
  with pytest.raises(SystemExit, match="empty"):
    cli.read_token(str(f), environ={})
  with pytest.raises(SystemExit, match="missing"):
    cli.read_token(str(tmp_path / "missing"), environ={})


def test_cli_refuses_to_start_without_a_token(monkeypatch, capsys):
  monkeypatch.delenv("HECSB_TOKEN", raising=False)
  with pytest.raises(SystemExit, match="no token"):
    cli.main(["/nonexistent/model"])


def test_server_refuses_a_model_that_is_not_entropy_coded(model):
  crbq = dataclasses.replace(model, method="crbq", tables=None)
  with pytest.raises(ValueError, match="entropy-coded"):
    app_lib.create_app(crbq, TOKEN, warm_up=False)
  with pytest.raises(ValueError, match="token"):
    app_lib.create_app(model, "  ", warm_up=False)


# --------------------------------------------------------------- app


def test_answers_equal_the_offline_prediction_and_batch(model, payloads):
  app = app_lib.create_app(model, TOKEN, max_batch=8, batch_wait_ms=50)

  async def body(client):
    health = (await client.get("/healthz")).json()
    answers = await asyncio.gather(*(
        client.post("/v1/predict", content=data, headers=AUTH)
        for data, _ in payloads))
    return health, answers

  health, answers = run_app(app, body)
  assert health == {"status": "ok", "model": model.name,
                    "model_id": coding.model_id(model.tables).hex()}
  for r, (_, probs) in zip(answers, payloads):
    assert r.status_code == 200, r.text
    assert_matches_offline(r.json(), probs, model)
  assert max(r.json()["batch"] for r in answers) > 1


def test_no_batching_runs_one_image_per_pass(model, payloads):
  app = app_lib.create_app(model, TOKEN, batching_enabled=False)
  assert app.state.server.predictor.buckets == (1,)

  async def body(client):
    return await asyncio.gather(*(
        client.post("/v1/predict", content=data, headers=AUTH)
        for data, _ in payloads[:4]))

  for r, (_, probs) in zip(run_app(app, body), payloads):
    assert r.status_code == 200 and r.json()["batch"] == 1
    assert_matches_offline(r.json(), probs, model)


def test_every_fault_gets_its_status_message_and_metric(model, payloads):
  max_body = 4096
  app = app_lib.create_app(model, TOKEN, max_batch=2,
                           max_body_bytes=max_body, body_timeout_s=0.3)
  faults = fx.fault_requests(model, payloads[0][0], max_body)
  expected = {}
  for _, _, kind, _ in faults:
    expected[kind] = expected.get(kind, 0) + 1

  async def body(client):
    out = []
    for name, *_, kwargs in faults:
      kwargs = dict(kwargs)
      out.append(await client.request(kwargs.pop("method"),
                                      kwargs.pop("url"), **kwargs))
    out.append(await client.post("/v1/predict", content=payloads[0][0],
                                 headers=AUTH))
    out.append(await client.get("/metrics"))
    return out

  answers = run_app(app, body)
  for (name, status, kind, _), r in zip(faults, answers):
    assert r.status_code == status, (name, r.status_code, r.text)
    message = r.json()["error"]
    assert isinstance(message, str) and message, name
  assert "Bearer" in answers[0].json()["error"]
  assert "4096" in answers[4].json()["error"]
  assert coding.model_id(model.tables).hex() in answers[10].json()["error"]
  assert "[1, 8, 8, 4]" in answers[11].json()["error"]
  good, scrape = answers[-2], answers[-1]
  assert_matches_offline(good.json(), payloads[0][1], model)
  counts = error_counts(app)
  assert {k: v for k, v in counts.items() if v} == expected
  # The exposition counts the same, in Prometheus's text format.
  families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
  by_kind = {s.labels["kind"]: s.value for s in families["hecsb_errors"]
             .samples if s.name == "hecsb_errors_total"}
  assert {k: v for k, v in by_kind.items() if v} == expected
  by_status = {s.labels["status"]: s.value
               for s in families["hecsb_requests"].samples
               if s.name == "hecsb_requests_total"}
  assert by_status["200"] == 1 and by_status["401"] == 2
  assert by_status["413"] == 2 and by_status["400"] == 5
  batch = {s.name: s.value for s in families["hecsb_batch_size"].samples}
  assert batch["hecsb_batch_size_count"] == 1


def test_refusals_allocate_nothing_and_memory_stays_flat(model, payloads):
  app = app_lib.create_app(model, TOKEN, max_batch=1, max_body_bytes=4096,
                           warm_up=False)
  faults = [f for f in fx.fault_requests(model, payloads[0][0], 4096)
            if f[2] not in ("timeout", "too_large")]

  async def body(client):
    async def round_():
      # In-process, a refusal never suspends, so the event loop would never
      # turn: let it, as a live server's does (it purges the cancelled
      # timers of each request's body deadline).
      await asyncio.sleep(0)
      for *_, kwargs in faults:
        kwargs = dict(kwargs)
        r = await client.request(kwargs.pop("method"), kwargs.pop("url"),
                                 **kwargs)
        assert r.status_code >= 400
    tracemalloc.start()
    try:
      # Warm: first-use caches (metric children, httpx's and json's) fill
      # over the first few dozen requests, then the count stays flat.
      for _ in range(20):
        await round_()
      # Exceptions with their tracebacks make reference cycles: garbage
      # until the collector runs, not a leak; count what survives it.
      gc.collect()
      base, _ = tracemalloc.get_traced_memory()
      tracemalloc.reset_peak()
      for _ in range(50):
        await round_()
      _, peak = tracemalloc.get_traced_memory()
      gc.collect()
      current, _ = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
    return base, current, peak

  base, current, peak = run_app(app, body)
  # 50 rounds of 12 refusals, one claiming 2^42 symbols: a leak of 100
  # bytes per request would add 60 KB.
  assert current - base < 32 * 1024, (base, current)
  assert peak - base < 2 * 1024 * 1024, (base, peak)
