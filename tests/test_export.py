"""Export of the edge head: the manifest's contract, and (below) the
StableHLO and .tflite heads against the JAX head on a tiny model."""

import copy
import json

import pytest

from hecsb_jax.edge import manifest as manifest_lib

# ---------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------


def _manifest_dict():
  return {
      "format": 1, "model": "hecsb_beta0.0003", "method": "hecsb",
      "setting": {"beta": 0.0003}, "model_id": "0123456789abcdef",
      "backbone": "efficientnet_lite0", "split": "block4",
      "input": {"size": 224, "resize": 256, "interpolation": "bicubic",
                "layout": "NHWC", "dtype": "float32", "range": [0, 255]},
      "normalization": {"mean": [127.0] * 3, "std": [128.0] * 3},
      "symbols": {"shape": [28, 28, 32], "dtype": "int32"},
      "files": {"tflite": "head.tflite", "stablehlo": "head.stablehlo",
                "tables": "tables.npz"},
      "versions": {"jax": "0.10.2"}, "training": {"top1": 0.8},
  }


def test_manifest_round_trips_through_its_folder(tmp_path):
  d = _manifest_dict()
  (tmp_path / "manifest.json").write_text(json.dumps(d))
  m = manifest_lib.load_manifest(tmp_path)
  assert m.to_dict() == json.loads(json.dumps(d))
  assert m.symbols.shape == (28, 28, 32) and m.input.range == (0.0, 255.0)
  assert m.model_id_bytes == bytes.fromhex("0123456789abcdef")
  assert m.path("tflite") == tmp_path / "head.tflite"
  (tmp_path / "again").mkdir()
  m.save(tmp_path / "again")
  assert manifest_lib.load_manifest(tmp_path / "again") == m


def _set(d, dotted, value):
  *parents, last = dotted.split(".")
  for key in parents:
    d = d[key]
  if value is _DELETE:
    del d[last]
  else:
    d[last] = value


_DELETE = object()


@pytest.mark.parametrize("field, value, message", [
    ("format", 2, "format: this code reads format 1"),
    ("method", "crbq", "method: expected one of"),
    ("model_id", "0123", "model_id: expected 16 lowercase hex"),
    ("model", _DELETE, "manifest.model: missing"),
    ("input.size", _DELETE, "input.size: missing"),
    ("input.size", "224", "input.size: expected int"),
    ("input.size", True, "input.size: expected int"),
    ("input.layout", "NCHW", "input.layout: expected 'NHWC'"),
    ("input.range", [255, 0], "input.range: expected [low, high]"),
    ("normalization.std", [1.0, 0.0, 1.0], "normalization.std: expected"
     " positive"),
    ("normalization.mean", [1.0], "normalization.mean: expected 3 numbers"),
    ("symbols.shape", [28, -1, 32], "symbols.shape: expected positive"),
    ("symbols.dtype", "float32", "symbols.dtype: expected 'int32'"),
    ("files.tflite", "../../etc/passwd", "files.tflite: expected a plain"
     " file name"),
    ("setting.beta", "small", "setting.beta: expected a number"),
])
def test_bad_manifest_names_the_file_and_field(tmp_path, field, value,
                                               message):
  d = copy.deepcopy(_manifest_dict())
  _set(d, field, value)
  (tmp_path / "manifest.json").write_text(json.dumps(d))
  with pytest.raises(manifest_lib.ManifestError) as e:
    manifest_lib.load_manifest(tmp_path)
  assert str(tmp_path / "manifest.json") in str(e.value)
  assert message in str(e.value)


def test_missing_or_corrupt_manifest_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "manifest.json")):
    manifest_lib.load_manifest(tmp_path)
  (tmp_path / "manifest.json").write_bytes(b"{\"format\": 1,")
  with pytest.raises(manifest_lib.ManifestError, match="not valid JSON"):
    manifest_lib.load_manifest(tmp_path)
