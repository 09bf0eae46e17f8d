"""The edge client as aarch64 code under qemu-aarch64 (benchmarks/edge_aarch64).

Slow: builds (once, cached under ~/.cache/hecsb_jax/aarch64) an arm64
Debian root and aarch64 wheels, cross-compiles the coder, then runs the
client under qemu on a real export (the server tests' toy HECS-B model
through `hecsb_jax.export`'s export_model) against the real server
(hecsb_jax.serve under uvicorn here) and checks that it sends the same
symbols and bytes as the x86-64 client and gets the same predictions, the
JAX model's offline ones. Skips, saying why, without qemu-aarch64 /
aarch64-linux-gnu-gcc, without dpkg's arm64 architecture or the arm64
packages, or when pip cannot reach the registry (.ci/run installs what it
can, best effort).
"""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edge_fixtures as fx  # pylint: disable=wrong-import-position

from benchmarks import edge_aarch64  # pylint: disable=wrong-import-position
from hecsb_jax.edge import preprocess  # pylint: disable=wrong-import-position

TOKEN = "aarch64-token"
_OFFLINE = re.compile(r"NewConnectionError|Failed to establish|Temporary"
                      r" failure in name resolution|Network is unreachable|"
                      r"Could not resolve|Failed to fetch|Max retries")


@pytest.fixture(scope="module")
def aarch64_env():
  """(root, site) of the emulated device, or a skip saying what is missing."""
  missing = edge_aarch64.missing_tools()
  if missing:
    pytest.skip(f"needs {', '.join(missing)} (Debian: qemu-user"
                " gcc-aarch64-linux-gnu)")
  try:
    root = edge_aarch64.ensure_root(edge_aarch64.DEFAULT_CACHE)
  except edge_aarch64.SetupError as e:
    pytest.skip(f"no arm64 Debian packages: {e}")
  try:
    site = edge_aarch64.ensure_site(edge_aarch64.DEFAULT_CACHE, "1.4.0")
  except edge_aarch64.SetupError as e:
    if _OFFLINE.search(str(e)):
      pytest.skip(f"pip cannot reach the package registry: {e}")
    raise
  return root, site


@pytest.mark.slow
def test_aarch64_client_sends_the_same_bytes(aarch64_env, tmp_path):
  root, site = aarch64_env
  model, manifest = fx.export_toy_model(tmp_path / "export")
  images = []
  for i, size in enumerate([(48, 40), (37, 52)]):
    pixels = np.random.default_rng(i).integers(0, 256, (*size[::-1], 3),
                                               np.uint8)
    images.append(tmp_path / f"im{i}.png")
    Image.fromarray(pixels).save(images[-1])
  token_file = tmp_path / "token"
  token_file.write_text(TOKEN)
  with fx.real_server(model, TOKEN, max_batch=2, batch_wait_ms=1) as url:
    native = edge_aarch64.run_native(manifest.directory, url, TOKEN, images)
    pkg = edge_aarch64.build_package(root, tmp_path / "build")
    emulated = edge_aarch64.run_emulated(
        root, site, pkg, manifest.directory, url, token_file, images,
        tmp_path / "out", timeout_s=600)
  summary = edge_aarch64.compare(native, emulated)
  assert summary["emulated_machine"] == "aarch64"
  assert summary["emulated_runtime"].startswith("ai_edge_litert 1.4")
  assert summary["symbols_equal"] == 1.0
  assert summary["bytes_equal"] == 1.0
  assert summary["predictions_equal"] == 1.0
  # Both agree with the JAX model offline (no export, no server).
  pixels = np.stack([preprocess.preprocess_file(
      i, manifest.input.resize, manifest.input.size) for i in images])
  symbols, classes = fx.jax_offline(model, pixels)
  assert (np.concatenate(native["symbols"]) == symbols).mean() >= 0.99
  assert [r["class"] for r in native["results"]] == classes.tolist()
  text = edge_aarch64.report(summary)
  assert "emulated (qemu-aarch64)" in text
