"""The edge distribution (edge/) installs and runs without JAX.

Builds a fresh virtual environment, installs the edge distribution into it
as README says (`pip install -c constraints.txt ./edge`, from a copy of
the files a clean clone has, so nothing is written into the checkout),
checks that `import jax` fails there and that pip lists none of jax, flax,
optax or orbax, then runs `python -m hecsb_jax.edge` from it on a real
export (the server tests' toy HECS-B model through `hecsb_jax.export`'s
export_model) against the real server (hecsb_jax.serve under uvicorn, in
this process): its predictions are the JAX model's offline ones. Needs the
package registry: skips, saying so, when pip cannot reach it (CI can).
"""

import json
import os
import re
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
  """(model, manifest, URL): the toy exported and served for real."""
  model, manifest = fx.export_toy_model(
      tmp_path_factory.mktemp("edge_env_export") / "export")
  with fx.real_server(model, TOKEN, max_batch=2, batch_wait_ms=1) as url:
    yield model, manifest, url


@pytest.mark.slow
def test_edge_env_client_against_the_real_server(edge_python, deployed,
                                                 tmp_path):
  model, manifest, url = deployed
  images = []
  for i, size in enumerate([(48, 40), (37, 52)]):
    pixels = np.random.default_rng(i).integers(0, 256, (*size[::-1], 3),
                                               np.uint8)
    images.append(tmp_path / f"im{i}.jpg")
    Image.fromarray(pixels).save(images[-1])
  token_file = tmp_path / "token"
  token_file.write_text(TOKEN)
  result = _run(edge_python, "-m", "hecsb_jax.edge", *map(str, images),
                "--export", str(manifest.directory), "--server", url,
                "--token-file", str(token_file), "--json",
                env={**os.environ, "PYTHONPATH": ""})
  assert result.returncode == 0, result.stderr[-3000:]
  answers = [json.loads(l) for l in result.stdout.splitlines()]
  # What the JAX model gives offline for the same crops.
  from hecsb_jax.edge import preprocess  # pylint: disable=g-import-not-at-top
  pixels = np.stack([preprocess.preprocess_file(
      i, manifest.input.resize, manifest.input.size) for i in images])
  symbols, classes = fx.jax_offline(model, pixels)
  assert [a["class"] for a in answers] == classes.tolist()
  for answer, s in zip(answers, symbols):
    assert answer["model"] == model.name and answer["batch"] >= 1
    # As many bytes as the JAX symbols' container (the CLI prints the
    # size; tests/test_edge_path.py compares the bytes themselves).
    assert answer["num_bytes"] == len(coding.compress(s[None],
                                                      model.tables))
    assert set(answer["timings_ms"]) == {"preprocess", "head", "coding",
                                         "network", "server", "total"}
  refused = _run(edge_python, "-m", "hecsb_jax.edge", str(images[0]),
                 "--export", str(manifest.directory), "--server", url,
                 "--token", "wrong")
  assert refused.returncode == 1
  assert "HTTP 401: missing or wrong token" in refused.stderr
