"""The edge distribution (edge/) installs and runs without JAX.

Builds a fresh virtual environment, installs the edge distribution into it
as README says (`pip install -c constraints.txt ./edge`, from a copy of
the files a clean clone has, so nothing is written into the checkout),
checks that `import jax` fails there and that pip lists none of jax, flax,
optax or orbax, then runs `python -m hecsb_jax.edge` from it against
servers in this process: the JAX-free stand-in (tests/edge_fixtures.py)
and the real one (hecsb_jax.serve under uvicorn, on the server tests' toy
model, with a head built for that model's shapes and tables). Needs the
package registry: skips, saying so, when pip cannot reach it (CI can).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edge_fixtures as fx  # pylint: disable=wrong-import-position

from hecsb_jax import coding  # pylint: disable=wrong-import-position

REPO_ROOT = Path(__file__).resolve().parents[1]
JAX_FAMILY = ("jax", "jaxlib", "flax", "optax", "orbax", "orbax-checkpoint")
# What pip prints when the registry is out of reach (not a packaging bug).
_OFFLINE = re.compile(r"NewConnectionError|Failed to establish|Temporary"
                      r" failure in name resolution|Network is unreachable|"
                      r"ProxyError|Max retries exceeded")
TOKEN = "edge-env-token"


def copy_edge_sources(dest: Path) -> Path:
  """Copies what the edge build reads, as a clean clone has it."""
  for rel in ("edge/pyproject.toml", "edge/setup.py", "constraints.txt",
              "hecsb_jax/__init__.py"):
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / rel, dest / rel)
  for package in ("hecsb_jax/coding", "hecsb_jax/edge"):
    (dest / package).mkdir(parents=True)
    for f in (REPO_ROOT / package).glob("*.py"):
      shutil.copy2(f, dest / package / f.name)
  shutil.copytree(REPO_ROOT / "native", dest / "native",
                  ignore=shutil.ignore_patterns("out", "fuzz_corpus"))
  return dest


@pytest.fixture(scope="module")
def edge_python(tmp_path_factory):
  """The python of a fresh venv with only the edge distribution installed."""
  root = tmp_path_factory.mktemp("edge_env")
  src = copy_edge_sources(root / "src")
  venv.create(root / "venv", with_pip=True)
  python = root / "venv" / "bin" / "python"
  result = subprocess.run(
      [str(python), "-m", "pip", "install", "-q", "-c",
       str(src / "constraints.txt"), str(src / "edge")],
      capture_output=True, text=True, timeout=900, check=False)
  if result.returncode != 0:
    log = result.stdout[-3000:] + result.stderr[-3000:]
    if _OFFLINE.search(log):
      pytest.skip(f"pip cannot reach the package registry: {log[-500:]}")
    pytest.fail(f"pip install ./edge failed:\n{log}")
  return python


def _run(python, *args, **kwargs):
  return subprocess.run([str(python), *args], capture_output=True, text=True,
                        timeout=300, check=False, cwd=kwargs.pop("cwd", "/"),
                        **kwargs)


@pytest.mark.slow
def test_edge_env_has_no_jax(edge_python):
  result = _run(edge_python, "-c", "import jax")
  assert result.returncode != 0 and "No module named 'jax'" in result.stderr
  listed = _run(edge_python, "-m", "pip", "list", "--format=json")
  names = {p["name"].lower() for p in json.loads(listed.stdout)}
  assert "hecsb_jax_edge" in names or "hecsb-jax-edge" in names
  assert not names & set(JAX_FAMILY), sorted(names & set(JAX_FAMILY))
  # The installed package is the edge subset, extension included.
  result = _run(edge_python, "-c", (
      "import hecsb_jax, hecsb_jax.coding._rc, hecsb_jax.edge.client, sys,"
      " pkgutil, os; print(sorted(m.name for m in pkgutil.iter_modules("
      "hecsb_jax.__path__)))"))
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "['coding', 'edge']"


@pytest.mark.slow
def test_edge_env_client_against_a_server(edge_python, tmp_path):
  manifest = fx.write_tiny_export(tmp_path / "export")
  images = []
  for i, size in enumerate([(320, 240), (240, 330)]):
    pixels = np.random.default_rng(i).integers(0, 256, (*size[::-1], 3),
                                               np.uint8)
    images.append(tmp_path / f"im{i}.jpg")
    Image.fromarray(pixels).save(images[-1])
  token_file = tmp_path / "token"
  token_file.write_text(TOKEN)
  tables = coding.load_tables(manifest.path("tables"))
  with fx.StandInServer(tables, TOKEN) as server:
    result = _run(edge_python, "-m", "hecsb_jax.edge", *map(str, images),
                  "--export", str(manifest.directory), "--server",
                  server.url, "--token-file", str(token_file), "--json",
                  env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    assert len(lines) == 2 and server.connections == 1
    for line, data in zip(lines, server.requests):
      symbols = coding.decompress(data, tables)
      assert line["class"] == int(np.argmax(fx.tail_logits(symbols)))
      assert line["num_bytes"] == len(data)
    refused = _run(edge_python, "-m", "hecsb_jax.edge", str(images[0]),
                   "--export", str(manifest.directory), "--server",
                   server.url, "--token", "wrong")
  assert refused.returncode == 1
  assert "HTTP 401: missing or wrong token" in refused.stderr


@pytest.fixture(scope="module")
def live_server():
  """(URL, model) of the real server (hecsb_jax.serve under uvicorn, in a
  thread here) on the server tests' toy HECS-B model."""
  serve_fixtures = pytest.importorskip("serve_fixtures")
  uvicorn = pytest.importorskip("uvicorn")
  from hecsb_jax.serve import app as app_lib  # pylint: disable=g-import-not-at-top
  model = serve_fixtures.tiny_model()
  app = app_lib.create_app(model, TOKEN, max_batch=2, batch_wait_ms=1)
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                         access_log=False))
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                            daemon=True)
  thread.start()
  deadline = time.monotonic() + 120
  while not server.started:
    assert thread.is_alive(), "uvicorn exited during start-up"
    assert time.monotonic() < deadline, "uvicorn did not start in 120 s"
    time.sleep(0.05)
  yield f"http://127.0.0.1:{sock.getsockname()[1]}", model
  server.should_exit = True
  thread.join(15)
  sock.close()


@pytest.mark.slow
def test_edge_env_client_against_the_real_server(edge_python, live_server,
                                                 tmp_path):
  url, model = live_server
  size = model.image_size
  # A head with the toy model's input size, symbol shape and tables: the
  # server decodes its symbols and runs its tail on them.
  shape = tuple(np.asarray(model.module.edge_symbols(
      np.zeros((1, size, size, 3), np.float32))).shape[1:])
  manifest = fx.write_tiny_export(
      tmp_path / "export", name=model.name, input_size=size,
      resize=size + 4, pool_size=size // shape[0], channels=shape[2],
      tables=model.tables)
  image = tmp_path / "im.png"
  Image.fromarray(np.random.default_rng(3).integers(
      0, 256, (48, 40, 3), np.uint8)).save(image)
  result = _run(edge_python, "-m", "hecsb_jax.edge", str(image), "--export",
                str(manifest.directory), "--server", url, "--token", TOKEN,
                "--json")
  assert result.returncode == 0, result.stderr[-3000:]
  answer = json.loads(result.stdout)
  # The same bytes here (same LiteRT) give the offline prediction.
  from hecsb_jax.edge import head as head_lib  # pylint: disable=g-import-not-at-top
  from hecsb_jax.edge import preprocess  # pylint: disable=g-import-not-at-top
  head = head_lib.Head.from_manifest(manifest)
  pixels = preprocess.preprocess_file(image, size + 4, size)
  data = coding.compress(head(pixels[None].astype(np.float32)), model.tables)
  assert answer["num_bytes"] == len(data)
  logits = np.asarray(model.module.logits_from_symbols(
      coding.decompress(data, model.tables)))[0]
  assert answer["class"] == int(np.argmax(logits))
  assert answer["model"] == model.name and answer["batch"] >= 1
  assert set(answer["timings_ms"]) == {"preprocess", "head", "coding",
                                       "network", "server", "total"}
