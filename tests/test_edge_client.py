"""The edge client: preprocessing, the LiteRT head, the HTTP client, the CLI.

The client alone: a hand-built .tflite head and a JAX-free stand-in
server (tests/edge_fixtures.py), milliseconds each. The real pieces (a
head exported by hecsb_jax.export, the real server) are in
tests/test_edge_path.py (the whole path against the JAX model offline),
tests/test_edge_env.py (from an environment without JAX) and
tests/test_edge_aarch64.py (as aarch64 code under qemu).
"""

import json
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edge_fixtures as fx  # pylint: disable=wrong-import-position

from hecsb_jax import coding  # pylint: disable=wrong-import-position
from hecsb_jax.data import imagenet_folder  # pylint: disable=wrong-import-position
from hecsb_jax.data import imagenet_pipeline  # pylint: disable=wrong-import-position
from hecsb_jax.edge import __main__ as cli  # pylint: disable=wrong-import-position
from hecsb_jax.edge import client as client_lib  # pylint: disable=wrong-import-position
from hecsb_jax.edge import head as head_lib  # pylint: disable=wrong-import-position
from hecsb_jax.edge import preprocess  # pylint: disable=wrong-import-position

TOKEN = "s3cret-token"


def _image(path, size, mode="RGB", seed=0):
  rng = np.random.default_rng(seed)
  shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
  Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode).save(path)
  return path


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  return fx.write_tiny_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  d = tmp_path_factory.mktemp("images")
  return [_image(d / f"im{i}.png", size, seed=i)
          for i, size in enumerate([(300, 257), (257, 400), (512, 512)])]


# ------------------------------------------------------------ preprocess


@pytest.mark.parametrize("size", [(300, 257), (257, 400), (256, 256),
                                  (1001, 333), (224, 300)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_preprocess_equals_evaluation_pipelines(tmp_path, size, mode):
  path = _image(tmp_path / "x.png", size, mode)
  got = preprocess.preprocess_file(path)
  assert got.shape == (224, 224, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got,
                                imagenet_folder.decode_center_crop(path))
  with Image.open(path) as img:
    rgb = img.convert("RGB")
  for interpolation in ("bicubic", "bilinear"):
    np.testing.assert_array_equal(
        preprocess.resize_center_crop(rgb, 256, 224, interpolation),
        imagenet_pipeline.resize_center_crop(rgb, 256, 224, interpolation))


def test_preprocess_truncates_the_longer_side():
  # torchvision: 256 * 400 / 257 = 398.4 -> 398, not rounded up.
  assert preprocess.resized_size(257, 400, 256) == (256, 398)
  assert preprocess.resized_size(400, 257, 256) == (398, 256)


def test_preprocess_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jpg"):
    preprocess.preprocess_file(tmp_path / "nope.jpg")
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(preprocess.ImageDecodeError, match="bad.jpg"):
    preprocess.preprocess_file(bad)
  with pytest.raises(ValueError, match="interpolation"):
    preprocess.resize_center_crop(Image.new("RGB", (300, 300)), 256, 224,
                                  "nearest")


# ------------------------------------------------------------------ head


def test_head_matches_numpy_reference(export):
  head = head_lib.Head.from_manifest(export, num_threads=1)
  pixels = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3))
  symbols = head(pixels.astype(np.float32))
  assert symbols.shape == (1, 28, 28, 32) and symbols.dtype == np.int32
  # floor() may differ where float32 and float64 straddle an integer.
  assert (symbols == fx.tiny_head_reference(pixels)).mean() > 0.999
  assert head.runtime.startswith(("ai_edge_litert", "tflite_runtime"))


def test_head_checks_shapes_against_the_manifest(export):
  path = export.path("tflite")
  with pytest.raises(head_lib.HeadError, match=r"output is int32 \[1, 28, 28"
                     r", 32\]; the manifest expects int32 \[1, 28, 28, 16\]"):
    head_lib.Head(path, (1, 224, 224, 3), (1, 28, 28, 16))
  with pytest.raises(head_lib.HeadError, match="head.tflite: input is"):
    head_lib.Head(path, (1, 192, 192, 3), (1, 28, 28, 32))
  head = head_lib.Head.from_manifest(export)
  with pytest.raises(ValueError, match=r"shape \[1, 224, 224, 3\]"):
    head(np.zeros((1, 200, 200, 3), np.float32))


def test_head_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.tflite"):
    head_lib.Head(tmp_path / "missing.tflite", (1, 2, 2, 3), (1, 1))
  junk = tmp_path / "junk.tflite"
  junk.write_bytes(b"\0" * 64)
  with pytest.raises(head_lib.HeadError, match="junk.tflite"):
    head_lib.Head(junk, (1, 2, 2, 3), (1, 1))


# ---------------------------------------------------------------- client


def test_predict_over_one_persistent_connection(export, images):
  tables = coding.load_tables(export.path("tables"))
  with fx.StandInServer(tables, TOKEN) as server:
    with client_lib.EdgeClient(export.directory, server.url, TOKEN) as c:
      assert c.health()["model_id"] == export.model_id
      results = [c.predict(path) for path in images]
  assert server.connections == 1
  for path, result, data in zip(images, results, server.requests):
    pixels = preprocess.preprocess_file(path)[None].astype(np.float32)
    symbols = coding.decompress(data, tables)
    assert (symbols == fx.tiny_head_reference(pixels)).mean() > 0.999
    assert result.num_bytes == len(data)
    assert result.label == int(np.argmax(fx.tail_logits(symbols)))
    assert [c for c, _ in result.top5][0] == result.label
    t = result.timings_ms
    assert all(t[s] >= 0 for s in client_lib.STAGES)
    assert t["total"] == pytest.approx(sum(t[s] for s in client_lib.STAGES))
    assert t["server"] == result.server_timings_ms["total"]


def test_encode_bytes_are_compress_of_head_output(export, images):
  with client_lib.EdgeClient(export.directory, "http://127.0.0.1:9",
                             TOKEN) as c:
    encoded = c.encode(images[0])
  assert encoded.data == coding.compress(encoded.symbols, c.tables)
  assert coding.read_header(encoded.data).shape == (1, 28, 28, 32)


def test_server_errors_are_shown_with_their_message(export, images,
                                                    tmp_path):
  tables = coding.load_tables(export.path("tables"))
  with fx.StandInServer(tables, TOKEN) as server:
    with client_lib.EdgeClient(export.directory, server.url, "wrong") as c:
      with pytest.raises(client_lib.ServerError,
                         match="HTTP 401: missing or wrong token") as e:
        c.predict(images[0])
      assert e.value.status == 401
  other = fx.write_tiny_export(tmp_path / "other")
  # Same head, other tables: the server refuses the model id.
  k = np.arange(-30, 31)
  pmf = np.tile(np.exp(-np.abs(k) / 4.0), (32, 1))
  from hecsb_jax.entropy.tables import tables_from_pmf  # pylint: disable=g-import-not-at-top
  with fx.StandInServer(
      tables_from_pmf(pmf / pmf.sum(1, keepdims=True) * 0.99,
                      np.full(32, -30)), TOKEN) as server:
    with client_lib.EdgeClient(other.directory, server.url, TOKEN) as c:
      with pytest.raises(client_lib.ServerError, match="HTTP 409"):
        c.predict(images[0])


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_connection_refused_names_the_url(export, images):
  url = f"http://127.0.0.1:{_free_port()}"
  with client_lib.EdgeClient(export.directory, url, TOKEN) as c:
    with pytest.raises(client_lib.ClientError,
                       match=f"{url}/v1/predict: cannot connect"):
      c.predict(images[0])


def test_export_errors_name_the_path(export, tmp_path):
  with pytest.raises(client_lib.ClientError, match="nowhere: export folder"):
    client_lib.EdgeClient(tmp_path / "nowhere", "http://x", TOKEN)
  with pytest.raises(client_lib.ClientError, match="manifest.json"):
    client_lib.EdgeClient(tmp_path, "http://x", TOKEN)
  broken = tmp_path / "broken"
  fx.write_tiny_export(broken)
  (broken / "tables.npz").unlink()
  with pytest.raises(client_lib.ClientError, match="tables.npz"):
    client_lib.EdgeClient(broken, "http://x", TOKEN)
  # Tables of another model beside this manifest.
  data = json.loads((broken / "manifest.json").read_text())
  data["model_id"] = "00" * 8
  (broken / "manifest.json").write_text(json.dumps(data))
  fx.tiny_tables().save_npz(broken / "tables.npz")
  with pytest.raises(client_lib.ClientError,
                     match="but the manifest says 0000000000000000"):
    client_lib.EdgeClient(broken, "http://x", TOKEN)


# ------------------------------------------------------------------- CLI


def test_cli_prints_json_per_image(export, images, tmp_path, capsys):
  token_file = tmp_path / "token"
  token_file.write_text(TOKEN + "\n")
  tables = coding.load_tables(export.path("tables"))
  with fx.StandInServer(tables, TOKEN) as server:
    status = cli.main([*map(str, images[:2]), "--export",
                       str(export.directory), "--server", server.url,
                       "--token-file", str(token_file), "--json"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0 and len(out) == 2
    first = json.loads(out[0])
    assert first["image"] == str(images[0])
    assert set(first["timings_ms"]) == {*client_lib.STAGES, "total"}
    assert cli.main([str(images[0]), "--export", str(export.directory),
                     "--server", server.url, "--token", TOKEN]) == 0
    assert "ms: preprocess" in capsys.readouterr().out


def test_cli_token_from_environment(export, images, monkeypatch, capsys):
  tables = coding.load_tables(export.path("tables"))
  monkeypatch.setenv("HECSB_TOKEN", TOKEN)
  with fx.StandInServer(tables, TOKEN) as server:
    assert cli.main([str(images[0]), "--export", str(export.directory),
                     "--server", server.url]) == 0
  assert f"{images[0]}: class" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("no_token", "no token: pass --token-file"),
    ("token_file", "missing-token: token file not found"),
    ("image", "image not found: .*missing.jpg"),
    ("export", "no-export: export folder not found"),
])
def test_cli_errors_are_clear(export, images, tmp_path, monkeypatch, capsys,
                              case, message):
  monkeypatch.delenv("HECSB_TOKEN", raising=False)
  args = {"images": [str(images[0])], "--export": str(export.directory),
          "--token": TOKEN}
  if case == "no_token":
    del args["--token"]
  elif case == "token_file":
    args["--token-file"] = str(tmp_path / "missing-token")
  elif case == "image":
    args["images"].append(str(tmp_path / "missing.jpg"))
  else:
    args["--export"] = str(tmp_path / "no-export")
  argv = args.pop("images") + ["--server", "http://127.0.0.1:9"]
  for k, v in args.items():
    argv += [k, v]
  assert cli.main(argv) == 1
  err = capsys.readouterr().err
  assert err.startswith("hecsb_jax.edge: error:")
  assert re.search(message, err), err
