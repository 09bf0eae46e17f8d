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


# ---------------------------------------------------------------------------
# Export of a tiny model
# ---------------------------------------------------------------------------

# An EfficientNet-Lite0 HECS-B model with random weights, at 64x64 input
# (8x8 symbols at block4) so that building, saving and exporting it stay
# within seconds. The measurement is scaled so that the symbols have about
# this standard deviation, as trained ones do: untrained, they would be
# nearly all zero and every head would agree trivially.
IMAGE_SIZE = 64
SYMBOL_STD = 6.0


def _random_teacher():
  """EfficientNet-Lite0 with LeCun-normal weights and identity BatchNorm
  statistics, filled from numpy into the abstract skeleton: initializing
  the real module eagerly compiles one program per parameter shape, about
  30 s on 2 busy cores; this takes about 3."""
  from flax import nnx
  import jax
  import jax.numpy as jnp
  import numpy as np
  from hecsb_jax.train import saved_model

  teacher = saved_model.backbone_skeleton("efficientnet_lite0")
  rng = np.random.default_rng(1)

  def fill(path, a):
    name = path[-2].key  # [..., DictKey(name), GetAttrKey("value")]
    if name in ("scale", "var"):
      return jnp.ones(a.shape, a.dtype)
    if name in ("bias", "mean"):
      return jnp.zeros(a.shape, a.dtype)
    # HWIO kernels (depthwise: I = 1) and [in, out] matrices.
    fan_in = int(np.prod(a.shape[:-1]))
    return jnp.asarray(rng.normal(size=a.shape) / np.sqrt(fan_in), a.dtype)

  nnx.update(teacher, jax.tree_util.tree_map_with_path(
      fill, nnx.state(teacher)))
  teacher.eval()
  return teacher


def _save_tiny_model(model_dir, method="hecsb"):
  """Builds, and saves the way experiments.split_rd does, a tiny model."""
  from flax import nnx
  from hecsb_jax import entropy
  from hecsb_jax.configs import split_rd
  from hecsb_jax.train import saved_model
  from hecsb_jax.train.checkpoint import TrainCheckpointer

  section = split_rd.get_config("quick")[method].to_dict()
  module = saved_model.build(method, _random_teacher(), split="block4",
                             section=section, value=1e-4, seed=0)
  module.eval()
  if method == "hecsb":
    import numpy as np
    x = (_pixels(2, seed=1).astype(np.float32) - 127.0) / 128.0
    y_std = float(np.std(module.bottleneck.measure(x)))
    kernel = module.bottleneck.measurement.kernel
    kernel[...] = kernel[...] * (SYMBOL_STD / y_std)
  tables = entropy.build_tables(module.bottleneck.entropy)
  model_dir.mkdir(parents=True)
  tables.save_npz(model_dir / "tables.npz")
  fingerprint = {"beta": 1e-4, "backbone": "efficientnet_lite0",
                 "split": "block4", "image_size": IMAGE_SIZE,
                 method: section}
  checkpointer = TrainCheckpointer(model_dir / "model")
  try:
    checkpointer.save(0, nnx.state(module),
                      {"fingerprint": fingerprint, "summary": {"test": 1}})
  finally:
    checkpointer.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(model folder, export folder, loaded model) of the tiny HECS-B."""
  from hecsb_jax.export import __main__ as export_cli
  from hecsb_jax.train import saved_model

  root = tmp_path_factory.mktemp("export")
  _save_tiny_model(root / "hecsb_beta0.0001")
  export_cli.main([str(root / "hecsb_beta0.0001"), "--out",
                   str(root / "out")])
  return (root / "hecsb_beta0.0001", root / "out",
          saved_model.load(root / "hecsb_beta0.0001"))


def _pixels(n, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


@pytest.mark.slow
def test_export_folder_matches_the_manifest_contract(exported):
  from hecsb_jax import coding

  model_dir, out, model = exported
  m = manifest_lib.load_manifest(out)
  # Written through the edge's Manifest: nothing it would not read back.
  assert json.loads((out / "manifest.json").read_text()) == m.to_dict()
  assert (m.model, m.method, m.setting) == ("hecsb_beta0.0001", "hecsb",
                                            {"beta": 1e-4})
  assert m.model_id == coding.model_id(model.tables).hex()
  assert m.symbols.shape == (IMAGE_SIZE // 8, IMAGE_SIZE // 8,
                             model.fingerprint["hecsb"]["num_measurements"])
  assert m.input.size == IMAGE_SIZE and m.input.resize == 73
  assert m.normalization.mean == (127.0,) * 3
  assert m.training["fingerprint"]["image_size"] == IMAGE_SIZE
  # tables.npz is the model's own file, byte for byte.
  assert (m.path("tables").read_bytes()
          == (model_dir / "tables.npz").read_bytes())
  assert m.versions["jax"] and m.versions["litert-converter"] == "0.5.0"


@pytest.mark.slow
def test_exported_heads_reproduce_the_jax_head(exported):
  """StableHLO and .tflite symbols against `edge_symbols` of the
  normalized image (what training and evaluation run)."""
  from ai_edge_litert.interpreter import Interpreter
  import jax
  import numpy as np
  from hecsb_jax.export import stablehlo
  from hecsb_jax.export import tflite

  _, out, model = exported
  m = manifest_lib.load_manifest(out)
  hlo = stablehlo.load(m.path("stablehlo"))
  runner = Interpreter(model_path=str(m.path("tflite")),
                       num_threads=1).get_signature_runner(tflite.SIGNATURE)
  jax_head = jax.jit(model.module.edge_symbols)
  equal = {"stablehlo": 0, "tflite": 0}
  total = 0
  for image in _pixels(4):
    want = np.asarray(jax_head(model.normalize(image[None])))
    pixels = image[None].astype(np.float32)
    got = {"stablehlo": np.asarray(hlo.call(pixels)),
           "tflite": runner(image=pixels)["symbols"]}
    for name, s in got.items():
      assert s.dtype == np.int32 and s.shape == want.shape, name
      assert np.abs(s - want).max() <= 1, name  # only .5-boundary ties
      equal[name] += int((s == want).sum())
    total += want.size
  # The symbols are not trivial: many distinct values.
  assert len(np.unique(want)) > 15
  for name, n in equal.items():
    assert n / total >= 0.999, (name, n, total)


@pytest.mark.slow
def test_other_methods_are_refused_by_name(exported):
  import dataclasses
  from hecsb_jax.export import folder
  from hecsb_jax.export import head as head_lib

  _, out, model = exported
  crbq = dataclasses.replace(model, method="crbq", tables=None)
  with pytest.raises(head_lib.ExportError, match="'crbq' cannot be"
                     " exported yet"):
    folder.export_model(crbq, out / "never")
  assert not (out / "never").exists()


def test_missing_or_corrupt_checkpoint_names_the_path(tmp_path, capsys):
  import sys
  from hecsb_jax.export import __main__ as export_cli

  missing = tmp_path / "no_such_model"
  sys_argv = sys.argv
  try:
    sys.argv = ["export", str(missing), "--out", str(tmp_path / "out")]
    assert export_cli._cli() == 1
    assert str(missing / "model") in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    (corrupt / "model" / "0").mkdir(parents=True)
    (corrupt / "model" / "0" / "_CHECKPOINT_METADATA").write_text("{")
    sys.argv = ["export", str(corrupt), "--out", str(tmp_path / "out")]
    assert export_cli._cli() == 1
    assert str(corrupt) in capsys.readouterr().err
  finally:
    sys.argv = sys_argv
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_svb_heads_reproduce_the_jax_head(tmp_path):
  """SVB's own encoder (strided convs, GDN) through the same export, from
  an in-memory model (no checkpoint: `export_model` is what the CLI
  runs after `saved_model.load`)."""
  from ai_edge_litert.interpreter import Interpreter
  import jax
  import numpy as np
  from hecsb_jax import entropy
  from hecsb_jax.configs import split_rd
  from hecsb_jax.data import imagenet_pipeline as pipeline
  from hecsb_jax.export import folder
  from hecsb_jax.export import stablehlo
  from hecsb_jax.export import tflite
  from hecsb_jax.train import saved_model

  section = split_rd.get_config("quick")["svb"].to_dict()
  module = saved_model.build("svb", _random_teacher(), split="block4",
                             section=section, value=1e-4, seed=0)
  module.eval()
  model = saved_model.SavedModel(
      path=tmp_path / "svb_beta0.0001", method="svb", value=1e-4,
      module=module, tables=entropy.build_tables(module.bottleneck.entropy),
      fingerprint={"svb": section}, summary={}, backbone="efficientnet_lite0",
      split="block4", image_size=IMAGE_SIZE,
      norm=pipeline.normalization("efficientnet_lite0"),
      interpolation="bicubic")
  folder.export_model(model, tmp_path / "out", log=None)
  m = manifest_lib.load_manifest(tmp_path / "out")
  assert m.method == "svb" and m.setting == {"beta": 1e-4}
  hlo = stablehlo.load(m.path("stablehlo"))
  runner = Interpreter(model_path=str(m.path("tflite")),
                       num_threads=1).get_signature_runner(tflite.SIGNATURE)
  image = _pixels(1, seed=2)
  want = np.asarray(jax.jit(module.edge_symbols)(model.normalize(image)))
  pixels = image.astype(np.float32)
  for got in (np.asarray(hlo.call(pixels)), runner(image=pixels)["symbols"]):
    assert got.shape == want.shape == (1, *m.symbols.shape)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got == want) >= 0.999
  assert len(np.unique(want)) > 3, np.unique(want)
