"""experiments.latency: the table's arithmetic, the link's cleanup on every
way out, the message without root, and (slow, root only) a real shaped
link whose measured rate must match its setting."""

import http.server
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from experiments import latency
from experiments import latency_net


def _row(num_bytes=3000.0, edge=10.0, server=20.0, rates=(12.0, 54.0)):
  return {
      "method": "hecsb", "setting": "beta=0.0003", "model": None,
      "bytes_per_image": num_bytes, "top1": 0.81, "edge_ms": edge,
      "server_ms": server,
      "links": {f"{r:g}": {"measured_ms": 2.5,
                           "computed_ms": latency.computed_ms(num_bytes, r)}
                for r in rates}}


def test_computed_transfer_is_bytes_times_8_over_rate():
  assert latency.computed_ms(1500, 12.0) == pytest.approx(1.0)
  assert latency.computed_ms(88435, 66.9) == pytest.approx(10.575, abs=1e-3)


def test_total_adds_edge_transfer_and_server():
  shaped = latency.add_totals(_row(), shaped=True)
  assert shaped["links"]["12"]["total_ms"] == pytest.approx(10 + 2.5 + 20)
  # Unshaped (loopback): the measured time says nothing about the rate.
  unshaped = latency.add_totals(_row(), shaped=False)
  assert unshaped["links"]["12"]["total_ms"] == pytest.approx(10 + 2 + 20)
  assert unshaped["links"]["54"]["total_ms"] == pytest.approx(
      30 + 3000 * 8 / 54e3)


def test_table_has_a_row_per_setting_and_columns_per_rate():
  rows = [latency.add_totals(_row(), True),
          latency.add_totals({**_row(1e4), "method": "jpeg",
                              "setting": "q=50", "top1": None}, True)]
  results = {"rates_mbit": [12.0, 54.0], "transfer": "shaped", "rows": rows}
  lines = latency.markdown(results).splitlines()
  assert len(lines) == 2 + 2
  assert "transfer ms @12" in lines[0] and "total ms @54" in lines[0]
  assert lines[2].startswith("| HECS-B | beta=0.0003 | 3000 | 0.810 |")
  # measured (computed) side by side; a missing top-1 is a dash.
  assert "| 2.50 (2.00) | 32.5 | – |" in lines[2]
  assert "| JPEG | q=50 | 10000 | – |" in lines[3]


def test_a_row_takes_the_best_forward_pass_and_the_mean_coder_time():
  from experiments import latency_compute  # JAX: imported only here

  row = latency_compute._row(  # pylint: disable=protected-access
      "hecsb", "beta=1", "m", [100, 300], [(10.0, 1.0), (12.0, 3.0)],
      [(1.0, 25.0), (3.0, 20.0)], [True, False])
  assert row["edge_parts_ms"] == {"compute": 10.0, "encode": 2.0}
  assert row["server_parts_ms"] == {"decode": 2.0, "model": 20.0}
  assert (row["edge_ms"], row["server_ms"]) == (12.0, 22.0)
  assert (row["bytes_per_image"], row["top1_sent"]) == (200.0, 0.5)


@pytest.mark.parametrize("text", ["", "12,x", "0", "-5,12", "12;54"])
def test_bad_rates_are_refused_with_an_example(text):
  with pytest.raises(Exception, match="12.0,54.0,66.9"):
    latency.parse_rates(text)


def test_rates_parse():
  assert latency.parse_rates("12.0,54,66.9") == (12.0, 54.0, 66.9)


def test_top1_comes_from_split_rd_results(tmp_path):
  path = tmp_path / "results.json"
  path.write_text('{"teacher": {}, "split": "holdout", "methods": {"jpeg":'
                  ' [{"setting": "q=5", "bytes_per_image": 1.0, "top1": 0.3,'
                  ' "top5": 0.5}]}}')
  assert latency.top1_from_results(path) == {("jpeg", "q=5"): 0.3}
  assert latency.top1_from_results(tmp_path / "none.json") == {}
  path.write_text("[1, 2]")
  with pytest.raises(ValueError, match="results.json"):
    latency.top1_from_results(path)


# ------------------------------------------------------------ no root


def test_without_root_it_says_so_and_offers_loopback(monkeypatch, tmp_path,
                                                     capsys):
  monkeypatch.setattr(latency_net.os, "geteuid", lambda: 1000)
  reason = latency_net.unavailable()
  assert "needs root" in reason
  with pytest.raises(SystemExit) as e:
    latency.main([str(tmp_path), "--out", str(tmp_path / "out")])
  message = str(e.value.code)
  assert reason in message and "--loopback" in message
  assert "bytes x 8 / rate" in message
  assert not (tmp_path / "out").exists()


def test_without_tc_it_names_the_tool(monkeypatch):
  monkeypatch.setattr(latency_net.os, "geteuid", lambda: 0)
  monkeypatch.setattr(latency_net.shutil, "which",
                      lambda tool: None if tool == "tc" else "/sbin/ip")
  assert latency_net.unavailable() == (
      "tc not found on PATH (install iproute2)")


# ------------------------------------------------------------ cleanup


class FakeRunner:
  """Records setup commands; fails the first one containing ``fail_on``."""

  def __init__(self, fail_on=None):
    self.calls, self.fail_on = [], fail_on

  def __call__(self, argv):
    self.calls.append(argv)
    if self.fail_on and self.fail_on in argv:
      raise latency_net.LinkUnavailable(f"{' '.join(argv)} failed")
    return ""

  def deleted(self):
    return [a[3] for a in self.calls if a[:3] == ["ip", "netns", "del"]]


def test_a_failed_setup_deletes_what_it_created():
  runner = FakeRunner(fail_on="veth")
  link = latency_net.ShapedLink(runner)
  with pytest.raises(latency_net.LinkUnavailable, match="veth"):
    with link:
      pytest.fail("the body must not run")
  assert sorted(runner.deleted()) == sorted([link.edge_ns, link.server_ns])


def test_an_error_inside_the_run_deletes_the_namespaces():
  runner = FakeRunner()
  with pytest.raises(RuntimeError, match="boom"):
    with latency_net.ShapedLink(runner) as link:
      link.set_rate(12.0)
      raise RuntimeError("boom")
  assert sorted(runner.deleted()) == sorted([link.edge_ns, link.server_ns])
  tbf = next(a for a in runner.calls if "tbf" in a)
  assert tbf[-6:] == ["rate", "12000kbit", "burst",
                      str(latency_net.BURST_BYTES), "limit",
                      str(latency_net.LIMIT_BYTES)]


def test_sigterm_cleans_up_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  runner = FakeRunner()
  with pytest.raises(SystemExit):
    with latency_net.ShapedLink(runner) as link:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler raises before this ends
  assert sorted(runner.deleted()) == sorted([link.edge_ns, link.server_ns])
  assert signal.getsignal(signal.SIGTERM) is before


def test_cleanup_stops_the_servers_it_started():
  with latency_net.LoopbackLink() as link:
    port = latency_net.start_sink(link)
    proc = link._procs[0]  # pylint: disable=protected-access
    assert proc.poll() is None and port > 0
  assert proc.poll() is not None


def test_names_are_unique_and_fit_interface_limits():
  a, b = latency_net.ShapedLink(FakeRunner()), latency_net.ShapedLink(
      FakeRunner())
  assert a.edge_ns != b.edge_ns
  assert len(a.edge_dev) <= 15 and len(a.server_dev) <= 15


def test_rate_must_be_positive():
  with pytest.raises(ValueError, match="positive"):
    latency_net.tbf_args(0)


# ------------------------------------------------------------ real sockets


def test_loopback_sends_every_payload(tmp_path):
  files = []
  for size in (1, 5000):
    files.append(tmp_path / f"{size}.bin")
    files[-1].write_bytes(os.urandom(size))
  with latency_net.LoopbackLink() as link:
    port = latency_net.start_sink(link)
    times = latency_net.measure_uplink(link, port, files, repeats=2)
  assert len(times) == 2 and all(len(t) == 2 for t in times)
  assert all(0 < t < 5 for row in times for t in row)


class _StandIn(http.server.BaseHTTPRequestHandler):
  """The HTTP contract's happy path and a refusal, for `post`."""

  seen = []

  def _answer(self, status, body):
    data = json.dumps(body).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def do_GET(self):  # pylint: disable=invalid-name
    self._answer(200, {"status": "ok"})

  def do_POST(self):  # pylint: disable=invalid-name
    body = self.rfile.read(int(self.headers["Content-Length"]))
    _StandIn.seen.append((self.headers["Authorization"],
                          self.headers["Content-Type"], body))
    if body == b"bad":
      self._answer(409, {"error": "a payload for another model"})
    else:
      self._answer(200, {"class": 7, "timings_ms": {
          "queue": 0.1, "decode": 1.0, "model": 2.0, "total": 3.5}})

  def log_message(self, *args):
    pass


@pytest.fixture
def stand_in():
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  _StandIn.seen.clear()
  yield f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


def test_post_follows_the_http_contract(stand_in):
  out = latency_net.post(stand_in, "s3cret", [b"abc", b"de"], repeats=2)
  assert [len(row) for row in out] == [2, 2]
  assert out[0][0]["class"] == 7 and out[0][0]["timings_ms"]["model"] == 2.0
  assert all(a["ms"] > 0 for row in out for a in row)
  assert _StandIn.seen[0] == ("Bearer s3cret", "application/x-hecsb", b"abc")


def test_post_names_a_refusal(stand_in):
  with pytest.raises(ConnectionError, match="409 .*another model"):
    latency_net.post(stand_in, "s3cret", [b"bad"], repeats=1)


def test_post_gives_up_on_a_server_that_never_answers():
  with pytest.raises(ConnectionError, match="healthz: no answer"):
    latency_net.post("http://127.0.0.1:9", "t", [b"x"], 1, wait_s=1.0)


@pytest.mark.slow
def test_shaped_link_measures_its_rate(tmp_path):
  reason = latency_net.unavailable()
  if reason:
    pytest.skip(reason)
  size, rate = 150_000, 12.0
  payload = tmp_path / "payload.bin"
  payload.write_bytes(os.urandom(size))
  with latency_net.ShapedLink() as link:
    port = latency_net.start_sink(link)
    link.set_rate(rate)
    assert "tbf" in link.qdisc()
    seconds = min(latency_net.measure_uplink(link, port, [payload], 3)[0])
    names = (link.edge_ns, link.server_ns)
  measured_mbit = size * 8 / seconds / 1e6
  assert measured_mbit == pytest.approx(rate, rel=0.2)
  listed = subprocess.run(["ip", "netns", "list"], capture_output=True,
                          text=True, check=True).stdout
  assert not any(name in listed for name in names)


def test_machine_reports_its_measured_load_and_priority():
  """What the times were measured under is read, not asserted."""
  from experiments import latency_compute  # JAX: imported only here

  m = latency_compute.machine()
  assert m["nice"] == os.nice(0)
  assert m["load_avg_1min"] >= 0
  assert f"nice {m['nice']}" in m["note"]
  assert f"load average {m['load_avg_1min']}" in m["note"]
