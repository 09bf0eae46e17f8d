"""A shaped network link between two namespaces, for real-socket transfers.

    edge namespace                          server namespace
    +---------------------+   veth pair    +---------------------+
    | client (send)       |  MTU 1500      | sink or HTTP server |
    | 10.77.0.1   [tbf]---+--------------->+ 10.77.0.2           |
    +---------------------+  <-- unshaped  +---------------------+

The uplink (edge -> server) is shaped with a token bucket filter on the edge
side of the veth pair (`tc qdisc ... tbf rate R burst B limit L`); replies
and TCP's acknowledgements come back unshaped, as on an uplink-bound
wireless link. Traffic never leaves the two namespaces, which this module
creates with unique names per run and always deletes (try/finally plus
SIGTERM/SIGHUP handlers that raise, so the finally runs on kill and on
Ctrl-C too).

It also holds the edge and server ends of the measurements, run in the
namespaces as ``python -m experiments.latency_net sink PORT`` (read a
length-prefixed payload, answer one byte), ``... send HOST PORT REPEATS
FILE...`` (over one persistent connection, the wall time from the first
byte sent to the sink's answer, per file and repeat; JSON on stdout) and
``... post URL TOKEN_FILE REPEATS FILE...`` (the same against the real
server, `python -m hecsb_jax.serve`, through its HTTP contract).

Needs root and iproute2's `ip` and `tc`; `unavailable()` says why not.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

EDGE_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"
MTU = 1500
# tbf counts 1514 bytes per full TCP segment on the veth: the MSS's 1448
# bytes of payload (with timestamps) plus TCP 32 + IP 20 + Ethernet 14
# headers, so 12 Mbit/s carries payload at 12 * 1448 / 1514 = 11.5.
# The bucket: one full frame and a little. tbf drops every packet larger
# than its burst, so it must hold one frame; whatever it holds leaves at
# the veth's own speed when the bucket is full, so a bigger burst would let
# whole small payloads (a 1-4 KB HECS-B container) skip the rate. Measured
# here: with 1600 bytes, 3.9 KB takes 1.8 ms at 12 Mbit/s against 2.6 ms
# computed (the first frame is free), 88 KB runs at 11.6, 49 and 60 Mbit/s
# through 12, 54 and 66.9 (a bucket this small loses ~10% at high rates to
# timer granularity; 3028 bytes lost 4% but passed 3.9 KB in 0.6 ms less).
BURST_BYTES = 1600
# Queue: enough for a whole large payload (PNG, ~90 KB) to wait in the
# bucket rather than be dropped; what a router's buffer does.
LIMIT_BYTES = 512 * 1024
# Pause before each timed send: > burst / rate at any rate used here.
IDLE_S = 0.02
READY = "ready"
# The endpoints run as `python -m experiments.latency_net` from here.
REPO_ROOT = Path(__file__).resolve().parents[1]


class LinkUnavailable(RuntimeError):
  """The namespaces or the shaping cannot be set up here (message says
  why and what to do instead)."""


def unavailable() -> str | None:
  """Why a shaped link cannot be built here, or None when it can."""
  if not hasattr(os, "geteuid") or os.geteuid() != 0:
    return ("creating network namespaces and tc shaping needs root (this"
            " process is not root)")
  missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
  if missing:
    return (f"{' and '.join(missing)} not found on PATH (install"
            " iproute2)")
  return None


def run_cmd(argv: list[str]) -> str:
  """Runs one setup command; raises LinkUnavailable naming it on failure."""
  try:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise LinkUnavailable(f"{' '.join(argv)}: {e}") from e
  if done.returncode != 0:
    raise LinkUnavailable(f"{' '.join(argv)} failed (exit"
                          f" {done.returncode}): {done.stderr.strip()}")
  return done.stdout


def tbf_args(rate_mbit: float) -> list[str]:
  """tc's tbf parameters for ``rate_mbit`` (module constants say why)."""
  if not rate_mbit > 0:
    raise ValueError(f"rate must be positive Mbit/s, got {rate_mbit}")
  return ["tbf", "rate", f"{rate_mbit * 1000:.0f}kbit", "burst",
          str(BURST_BYTES), "limit", str(LIMIT_BYTES)]


class _RaiseOnSignal:
  """Turns SIGTERM and SIGHUP into SystemExit while active (SIGINT already
  raises KeyboardInterrupt), so that `finally` blocks clean up."""

  SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP")
                  if hasattr(signal, n))

  def __enter__(self):
    self._old = {}
    # signal.signal works only in the main thread.
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._old[sig] = signal.signal(sig, self._raise)
    return self

  @staticmethod
  def _raise(signum, frame):
    del frame
    raise SystemExit(128 + signum)

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)
    return False


class ShapedLink:
  """Two namespaces joined by a veth pair whose uplink is shaped.

  Use as a context manager; `close()` (run on exit, on exceptions and on
  SIGTERM/SIGHUP/Ctrl-C) stops the processes started here and deletes the
  namespaces, which deletes the veth pair with them.

  Attributes:
    tag: the run's unique suffix; the namespaces are ``hjlat-<tag>-edge``
      and ``hjlat-<tag>-srv``.
    rate_mbit: the current shaping rate (None before `set_rate`).
  """

  server_ip = SERVER_IP

  def __init__(self, runner=run_cmd):
    self._run = runner
    self.tag = f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}"
    self.edge_ns = f"hjlat-{self.tag}-edge"
    self.server_ns = f"hjlat-{self.tag}-srv"
    # Interface names are limited to 15 characters.
    self.edge_dev, self.server_dev = f"hje{self.tag}", f"hjs{self.tag}"
    self.rate_mbit = None
    self._created: list[str] = []
    self._procs: list[subprocess.Popen] = []
    self._signals = _RaiseOnSignal()

  def __enter__(self) -> "ShapedLink":
    self._signals.__enter__()
    try:
      self.create()
    except BaseException:
      self.close()
      raise
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def create(self) -> None:
    r = self._run
    for ns in (self.edge_ns, self.server_ns):
      r(["ip", "netns", "add", ns])
      self._created.append(ns)
      r(["ip", "-n", ns, "link", "set", "lo", "up"])
    r(["ip", "-n", self.edge_ns, "link", "add", self.edge_dev, "mtu",
       str(MTU), "type", "veth", "peer", "name", self.server_dev, "netns",
       self.server_ns, "mtu", str(MTU)])
    for ns, dev, ip in ((self.edge_ns, self.edge_dev, EDGE_IP),
                        (self.server_ns, self.server_dev, SERVER_IP)):
      r(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
      r(["ip", "-n", ns, "link", "set", dev, "up"])

  def set_rate(self, rate_mbit: float) -> None:
    """Shapes the uplink to ``rate_mbit`` (replacing any earlier rate)."""
    self._run(["tc", "-n", self.edge_ns, "qdisc", "replace", "dev",
               self.edge_dev, "root", *tbf_args(rate_mbit)])
    self.rate_mbit = rate_mbit

  def qdisc(self) -> str:
    return self._run(["tc", "-n", self.edge_ns, "qdisc", "show", "dev",
                      self.edge_dev]).strip()

  def argv(self, side: str, argv: list[str]) -> list[str]:
    """``argv`` run inside the "edge" or "server" namespace."""
    ns = {"edge": self.edge_ns, "server": self.server_ns}[side]
    return ["ip", "netns", "exec", ns, *argv]

  def start_server(self, argv: list[str], ready: str | None = READY,
                   timeout_s: float = 120.0
                   ) -> tuple[subprocess.Popen, str]:
    """Starts ``argv`` in the server namespace (it is stopped with the
    link, or by `stop`). With ``ready``, waits until it prints a line
    containing it and returns that line; with None its output goes to
    /dev/null and the caller checks readiness itself (an HTTP server)."""
    if ready is None:
      proc = subprocess.Popen(self.argv("server", argv),
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
      self._procs.append(proc)
      return proc, ""
    proc = subprocess.Popen(self.argv("server", argv), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            cwd=REPO_ROOT)
    self._procs.append(proc)
    deadline = time.monotonic() + timeout_s
    seen = []
    # readline blocks; the server prints its ready line promptly or dies.
    while time.monotonic() < deadline:
      line = proc.stdout.readline()
      if not line:
        break
      seen.append(line)
      if ready in line:
        return proc, line
    raise LinkUnavailable(
        f"server {' '.join(argv)} did not report {ready!r} within"
        f" {timeout_s:.0f} s (exit {proc.poll()}); its output:\n"
        + "".join(seen[-20:]))

  def stop(self, proc: subprocess.Popen) -> None:
    """Stops one process started by `start_server`."""
    if proc.poll() is None:
      proc.terminate()
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
      proc.stdout.close()
    if proc in self._procs:
      self._procs.remove(proc)

  def run_edge(self, argv: list[str], timeout_s: float = 600.0) -> str:
    """Runs ``argv`` in the edge namespace; its stdout."""
    done = subprocess.run(self.argv("edge", argv), capture_output=True,
                          text=True, timeout=timeout_s, check=False,
                          cwd=REPO_ROOT)
    if done.returncode != 0:
      raise RuntimeError(f"edge command {' '.join(argv)} failed (exit"
                         f" {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout

  def close(self) -> None:
    """Stops the processes started here, deletes the namespaces. Safe to
    call twice; each step runs even when an earlier one fails."""
    for proc in list(self._procs):
      self.stop(proc)
    errors = []
    while self._created:
      ns = self._created.pop()
      try:
        self._run(["ip", "netns", "del", ns])
      except LinkUnavailable as e:
        errors.append(str(e))
    self._signals.__exit__(None, None, None)
    if errors:
      print("warning: cleanup left " + "; ".join(errors), file=sys.stderr)


class LoopbackLink(ShapedLink):
  """The fallback without root: this namespace's own loopback, unshaped
  (`set_rate` only records the rate; transfer times must then be the
  computed bytes x 8 / rate). Same interface as `ShapedLink`."""

  server_ip = "127.0.0.1"

  def create(self) -> None:
    pass

  def set_rate(self, rate_mbit: float) -> None:
    self.rate_mbit = rate_mbit

  def qdisc(self) -> str:
    return "none (unshaped loopback)"

  def argv(self, side: str, argv: list[str]) -> list[str]:
    del side
    return list(argv)


def start_sink(link: ShapedLink) -> int:
  """Starts the sink in ``link``'s server namespace; its port."""
  _, line = link.start_server([sys.executable, "-m",
                               "experiments.latency_net", "sink", "0"])
  return int(line.split()[-1])


def measure_uplink(link: ShapedLink, port: int, files: list[Path],
                   repeats: int) -> list[list[float]]:
  """Seconds to send each file and get the sink's one-byte answer, through
  ``link`` at its current rate; [len(files)][repeats]. `start_sink` first."""
  out = link.run_edge([sys.executable, "-m", "experiments.latency_net",
                       "send", link.server_ip, str(port), str(repeats),
                       *map(str, files)])
  return json.loads(out)


def measure_http(link: ShapedLink, url: str, token_file: Path,
                 files: list[Path], repeats: int) -> list[list[dict]]:
  """POSTs each file (a container) ``repeats`` times to the HECS-B server
  at ``url`` from the edge namespace; per file and repeat {"ms": the
  request's wall time, "timings_ms": the server's, "class": its answer}."""
  out = link.run_edge([sys.executable, "-m", "experiments.latency_net",
                       "post", url, str(token_file), str(repeats),
                       *map(str, files)])
  return json.loads(out)


# ---------------------------------------------------- the endpoints


def _read_exact(conn: socket.socket, n: int) -> bytes | None:
  chunks, got = [], 0
  while got < n:
    chunk = conn.recv(min(n - got, 1 << 16))
    if not chunk:
      return None
    chunks.append(chunk)
    got += len(chunk)
  return b"".join(chunks)


def sink(port: int, host: str = "0.0.0.0") -> None:
  """Serves forever: per message (4-byte big-endian length + payload),
  answers b"k" once the whole payload has arrived."""
  with socket.create_server((host, port)) as server:
    print(READY, server.getsockname()[1], flush=True)
    while True:
      conn, _ = server.accept()
      with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (head := _read_exact(conn, 4)) is not None:
          if _read_exact(conn, struct.unpack(">I", head)[0]) is None:
            break
          conn.sendall(b"k")


def send(host: str, port: int, payloads: list[bytes],
         repeats: int) -> list[list[float]]:
  """Per payload and repeat, seconds from the first byte sent to the
  answer, over one connection (a persistent one, as HTTP keep-alive)."""
  with socket.create_connection((host, port), timeout=60) as conn:
    # No Nagle: the last partial segment leaves at once, as a client that
    # writes a whole request does.
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(struct.pack(">I", 1) + b"w")  # warm-up: handshake done
    if _read_exact(conn, 1) != b"k":
      raise ConnectionError(f"{host}:{port}: the sink did not answer")
    times = []
    for payload in payloads:
      message = struct.pack(">I", len(payload)) + payload
      row = []
      for _ in range(repeats):
        # Idle first, untimed, so that every send starts with a full
        # bucket (as an image after the edge's compute would), not with
        # what the previous one left.
        time.sleep(IDLE_S)
        start = time.perf_counter()
        conn.sendall(message)
        if _read_exact(conn, 1) != b"k":
          raise ConnectionError(f"{host}:{port}: connection closed")
        row.append(time.perf_counter() - start)
      times.append(row)
  return times


def post(url: str, token: str, payloads: list[bytes], repeats: int,
         wait_s: float = 900.0) -> list[list[dict]]:
  """The HTTP contract's client side (common to hecsb_jax.serve): waits
  for GET /healthz, then POSTs every payload over one keep-alive
  connection; see `measure_http`."""
  import httpx  # pylint: disable=g-import-not-at-top  # only this end needs it

  with httpx.Client(base_url=url, timeout=120.0) as client:
    deadline = time.monotonic() + wait_s
    while True:  # the server loads and compiles its model first
      try:
        if client.get("/healthz").status_code == 200:
          break
      except httpx.TransportError:
        pass
      if time.monotonic() > deadline:
        raise ConnectionError(f"{url}/healthz: no answer in {wait_s:.0f} s")
      time.sleep(0.5)
    headers = {"Authorization": f"Bearer {token}",
               "Content-Type": "application/x-hecsb"}
    results = []
    for payload in payloads:
      row = []
      for _ in range(repeats):
        time.sleep(IDLE_S)  # a full bucket, as in `send`
        start = time.perf_counter()
        r = client.post("/v1/predict", content=payload, headers=headers)
        ms = (time.perf_counter() - start) * 1e3
        if r.status_code != 200:
          raise ConnectionError(f"{url}/v1/predict: {r.status_code}"
                                f" {r.text[:300]}")
        body = r.json()
        row.append({"ms": ms, "timings_ms": body["timings_ms"],
                    "class": body["class"]})
      results.append(row)
  return results


def main(argv: list[str]) -> None:
  if argv[:1] == ["sink"] and len(argv) == 2:
    sink(int(argv[1]))
  elif argv[:1] == ["send"] and len(argv) >= 5:
    payloads = [Path(f).read_bytes() for f in argv[4:]]
    print(json.dumps(send(argv[1], int(argv[2]), payloads, int(argv[3]))))
  elif argv[:1] == ["post"] and len(argv) >= 5:
    payloads = [Path(f).read_bytes() for f in argv[4:]]
    token = Path(argv[2]).read_text().strip()
    print(json.dumps(post(argv[1], token, payloads, int(argv[3]))))
  else:
    sys.exit("usage: python -m experiments.latency_net sink PORT\n"
             "       python -m experiments.latency_net send HOST PORT"
             " REPEATS FILE...\n"
             "       python -m experiments.latency_net post URL TOKEN_FILE"
             " REPEATS FILE...")


if __name__ == "__main__":
  with contextlib.suppress(KeyboardInterrupt):
    main(sys.argv[1:])
