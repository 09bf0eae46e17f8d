"""ResNet-50: split exactness, the torchvision importer, reference checks.

No ResNet-50 weights exist on these machines, so every check runs on
random weights the test makes: written in torchvision's names as
.safetensors (the safetensors package) and as .pth (a minimal writer of
torch's zip format below, without torch), read back by the importer.

The independent check is `keras.applications.ResNet50` (KERAS_BACKEND=jax,
no TensorFlow): its random weights, renamed to torchvision's layout, give
our forward the same logits within `_REFERENCE_TOLERANCE`. Keras builds the
original v1 layout (stride in the first 1×1 convolution, BatchNorm epsilon
1.001e-5, convolutions with biases), so the comparison uses
`stride_in_1x1=True, bn_epsilon=1.001e-5`, and each convolution's bias is
folded into the running mean of the BatchNorm after it (BN(z + b) with mean
μ is BN(z) with mean μ − b, exactly). When torch and torchvision are
installed (not in the dev extra: several GB), the default v1.5 layout is
also checked against torchvision itself on a file written by torch.save.

`tests/golden/torch_state_dict.pth` was written by torch 2.14.1 (see
`test_pth_written_by_torch_reads_exactly` for what it holds and how).
"""

import os
from pathlib import Path
import struct
import zipfile

from flax import nnx
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from hecsb_jax.data import pretrained
from hecsb_jax.models import resnet
from hecsb_jax.models import resnet_import
from hecsb_jax.data import torch_format
from hecsb_jax.models import weights

GOLDEN = Path(__file__).resolve().parent / "golden"
# Small inputs keep a ResNet-50 forward cheap on a CPU (a 224×224 image
# costs ~4 GFLOPs); 64×64 still leaves a 2×2 map after layer4.
_INPUT_SHAPE = (2, 64, 64, 3)
# Max |ours − reference| over the logits, relative to max(1, max |logits|):
# float32 through 53 convolutions, summed in different orders. Measured
# here: 7e-7 (keras: 2.0e-6 at max |logit| 2.85) and 1e-6 (torchvision:
# 3.7e-6 at 3.73); the stride in the wrong convolution gives 0.36 (1.04).
_REFERENCE_TOLERANCE = 5e-5
# Random BatchNorm parameters and statistics (they do not match the
# activations, as in a trained net they would): the last BatchNorm of each
# residual branch gets a smaller scale, so that the residual stream neither
# explodes nor drowns the input through 16 blocks (logits of a few units,
# differing between the two test images by about a fifth of that).
_BN_SCALE = (0.5, 1.5)
_LAST_BN_SCALE = (0.3, 0.6)
_BN_SHIFT = 0.02
_BN_VAR = (0.5, 2.0)


# ---------------------------------------------------------------------------
# Random weights and files in torchvision's layout
# ---------------------------------------------------------------------------


def _abstract_model(**kwargs) -> resnet.ResNet:
  return nnx.eval_shape(lambda: resnet.resnet50(rngs=nnx.Rngs(0), **kwargs))


def _fill(model: resnet.ResNet, state_dict) -> None:
  weights.assign_state_dict(
      model,
      resnet_import.torch_state_dict_mapping(model),
      state_dict,
      "<memory>",
      ignore=resnet_import.IGNORED,
  )


def _random_state_dict(seed: int = 0, **kwargs) -> dict[str, np.ndarray]:
  """Random torchvision-named tensors whose forward stays well scaled.

  Convolutions are He-normal; BatchNorm as `_BN_SCALE` and friends.
  """
  rng = np.random.default_rng(seed)
  model = _abstract_model(**kwargs)
  for path, var in weights.model_variables(model).items():
    shape = var.get_value().shape  # kernels: HWIO or [in, out]
    if path[-1] == "kernel":
      gain = 2 if len(shape) == 4 else 1
      value = rng.normal(0, np.sqrt(gain / np.prod(shape[:-1])), shape)
    elif path[-1] == "scale":
      last = "bn3" in path or "downsample" in path
      value = rng.uniform(*(_LAST_BN_SCALE if last else _BN_SCALE), shape)
    elif path[-1] == "var":
      value = rng.uniform(*_BN_VAR, shape)
    else:  # bias, mean
      value = rng.normal(0, _BN_SHIFT, shape)
    var.set_value(jnp.asarray(value, jnp.float32))
  # Counters as a trained model has them, which the importer ignores.
  return {
      k: np.array(123, np.int64) if k.endswith("num_batches_tracked") else v
      for k, v in resnet_import.export_state_dict(model).items()
  }


def _images(seed: int = 1) -> jax.Array:
  """[2, 64, 64, 3] normalized: pixel noise, and 8×8 blocks of colour."""
  rng = np.random.default_rng(seed)
  noise = rng.uniform(0, 1, _INPUT_SHAPE[1:])
  blocks = np.kron(rng.uniform(0, 1, (8, 8, 3)), np.ones((8, 8, 1)))
  x = np.stack([noise, blocks])
  return resnet.normalize(jnp.asarray(x, jnp.float32))


# A minimal writer of torch.save's zip format, independent of the reader:
# the pickle is spelled out opcode by opcode (protocol 2, as torch writes).
_STORAGE_TYPES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
}


def _p_str(s: str) -> bytes:
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _p_int(i: int) -> bytes:
  return b"J" + struct.pack("<i", i)  # BININT


def _p_tuple(items) -> bytes:
  return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _p_global(module: str, name: str) -> bytes:
  return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


_P_ORDERED_DICT = _p_global("collections", "OrderedDict") + b")R"


def _p_tensor(key, storage_type, numel, shape, stride, offset=0) -> bytes:
  """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`."""
  pid = _p_tuple([
      _p_str("storage"),
      _p_global("torch", storage_type),
      _p_str(key),
      _p_str("cpu"),
      _p_int(numel),
  ])
  args = _p_tuple([
      pid + b"Q",  # BINPERSID
      _p_int(offset),
      _p_tuple(_p_int(n) for n in shape),
      _p_tuple(_p_int(s) for s in stride),
      b"\x89",  # NEWFALSE: requires_grad
      _P_ORDERED_DICT,  # backward hooks
  ])
  return _p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _write_pth(path, state_dict, *, pickle_bytes=None, prefix="archive"):
  """Writes {name: array} as torch.save would (one storage per tensor).

  `pickle_bytes`, when given, replaces data.pkl (for hostile files).
  """
  body = [b"\x80\x02", _P_ORDERED_DICT, b"("]  # PROTO 2, {}, MARK
  storages = {}
  for key, (name, value) in enumerate(state_dict.items()):
    value = np.ascontiguousarray(value)
    storages[str(key)] = value.tobytes()
    strides = [s // value.itemsize for s in value.strides]
    storage_type = _STORAGE_TYPES[value.dtype]
    body += [
        _p_str(name),
        _p_tensor(str(key), storage_type, value.size, value.shape, strides),
    ]
  body += [b"u."]  # SETITEMS, STOP
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr(f"{prefix}/data.pkl", pickle_bytes or b"".join(body))
    archive.writestr(f"{prefix}/byteorder", "little")
    for key, raw in storages.items():
      archive.writestr(f"{prefix}/data/{key}", raw)
    archive.writestr(f"{prefix}/version", "3\n")


def _write_safetensors(path, state_dict):
  safetensors_numpy = pytest.importorskip(
      "safetensors.numpy", reason="safetensors not installed"
  )
  safetensors_numpy.save_file(state_dict, str(path))


_WRITERS = {".pth": _write_pth, ".safetensors": _write_safetensors}


@pytest.fixture(scope="module")
def state_dict():
  return _random_state_dict()


@pytest.fixture(scope="module")
def model(state_dict):
  """The random ResNet-50 in eval mode, filled from memory."""
  m = _abstract_model()
  _fill(m, state_dict)
  m.eval()
  return m


@pytest.fixture(scope="module")
def logits(model):
  return np.asarray(model(_images()))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def test_parameter_count_is_torchvisions():
  # torchvision.models.resnet50(): 25,557,032 parameters.
  params = nnx.state(_abstract_model(), nnx.Param)
  assert sum(p.size for p in jax.tree.leaves(params)) == 25_557_032


@pytest.mark.parametrize("stride_in_1x1", [False, True])
def test_downsampling_stride_sits_where_the_layout_puts_it(stride_in_1x1):
  block = _abstract_model(stride_in_1x1=stride_in_1x1).layer2[0]
  strides = (block.conv1.strides, block.conv2.strides)
  assert strides == ((2, 1) if stride_in_1x1 else (1, 2))
  assert block.downsample.conv.strides == 2


def test_head_then_tail_equals_forward_at_every_split_point(model, logits):
  x = _images()
  assert model.split_points == resnet.SPLIT_POINTS
  for point in resnet.SPLIT_POINTS:
    h = model.features(x, until=point)
    stride = resnet.SPLIT_STRIDES[point]
    assert h.shape == (
        2,
        64 // stride,
        64 // stride,
        resnet.SPLIT_CHANNELS[point],
    )
    np.testing.assert_array_equal(
        np.asarray(model.tail(h, after=point)), logits, err_msg=point
    )


def test_unknown_split_point_raises(model):
  with pytest.raises(ValueError, match="layer5.*'stem', 'layer1'"):
    model.features(_images(), until="layer5")
  with pytest.raises(ValueError, match="unknown split point"):
    model.tail(jnp.zeros((1, 2, 2, 2048)), after="fc")


def test_normalize_uses_torchvision_constants():
  p = resnet.TORCHVISION_PREPROCESSING
  assert (p.mean, p.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
  assert (p.resize_size, p.crop_size) == (256, 224)
  x = jnp.full((1, 2, 2, 3), 0.5)
  expected = (0.5 - np.array(p.mean)) / np.array(p.std)
  np.testing.assert_allclose(resnet.normalize(x)[0, 0, 0], expected, rtol=1e-6)


# ---------------------------------------------------------------------------
# The importer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_import_round_trip_is_exact(tmp_path, state_dict, logits, suffix):
  path = tmp_path / f"resnet50{suffix}"
  _WRITERS[suffix](path, state_dict)
  loaded = pretrained.load_resnet50(path)
  exported = resnet_import.export_state_dict(loaded)
  assert set(exported) == set(state_dict)
  for name, value in state_dict.items():
    if not name.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(exported[name], value, err_msg=name)
  np.testing.assert_array_equal(np.asarray(loaded(_images())), logits)


@pytest.mark.parametrize(
    "suffix,dtype", [(".pth", ml_dtypes.bfloat16), (".safetensors", np.float16)]
)
def test_half_precision_weights_load_as_float32(
    tmp_path, state_dict, suffix, dtype
):
  half = {k: v.astype(dtype) for k, v in state_dict.items() if v.ndim}
  path = tmp_path / f"half{suffix}"
  _WRITERS[suffix](path, half)
  exported = resnet_import.export_state_dict(pretrained.load_resnet50(path))
  for name, value in half.items():
    assert exported[name].dtype == np.float32
    np.testing.assert_array_equal(exported[name], value.astype(np.float32))


def test_export_import_preserves_every_variable(model, state_dict):
  exported = resnet_import.export_state_dict(model)
  assert len(exported) == 320  # torchvision's resnet50().state_dict()
  again = _abstract_model()
  _fill(again, exported)
  for (pa, a), (pb, b) in zip(
      nnx.to_flat_state(nnx.state(model)),
      nnx.to_flat_state(nnx.state(again)),
      strict=True,
  ):
    assert pa == pb and type(a) is type(b)
    np.testing.assert_array_equal(a.get_value(), b.get_value())
  assert isinstance(again.bn1.mean, nnx.BatchStat)
  assert isinstance(again.layer3[0].downsample.bn.scale, nnx.Param)


def _broken(state_dict, kind):
  broken = dict(state_dict)
  if kind == "missing":
    del broken["layer3.2.bn2.running_var"]
    return broken, ["layer3.2.bn2.running_var", "missing", "(256,)"]
  if kind == "misshaped":
    broken["layer2.0.downsample.0.weight"] = np.zeros(
        (512, 256, 3, 3), np.float32
    )
    return broken, [
        "layer2.0.downsample.0.weight",
        "(512, 256, 1, 1)",
        "(512, 256, 3, 3)",
    ]
  broken["layer4.3.conv1.weight"] = np.zeros((512, 2048, 1, 1), np.float32)
  return broken, ["unexpected", "layer4.3.conv1.weight", "(512, 2048, 1, 1)"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("kind", ["missing", "misshaped", "extra"])
def test_bad_tensor_error_names_file_tensor_and_shapes(
    tmp_path, state_dict, suffix, kind
):
  broken, words = _broken(state_dict, kind)
  path = tmp_path / f"broken{suffix}"
  _WRITERS[suffix](path, broken)
  with pytest.raises(weights.WeightsError) as info:
    pretrained.load_resnet50(path)
  message = str(info.value)
  assert str(path) in message
  for word in words:
    assert word in message


def test_wrong_class_count_is_reported(tmp_path, state_dict):
  path = tmp_path / "w.safetensors"
  _write_safetensors(path, state_dict)
  with pytest.raises(
      weights.WeightsError,
      match=r"fc.weight.*\(10, 2048\).*\(1000, 2048\)",
  ):
    pretrained.load_resnet50(path, num_classes=10)


def test_pth_written_by_torch_reads_exactly():
  # Written by torch 2.14.1, in the zip format and (the `_legacy` file,
  # same content) with _use_new_zipfile_serialization=False:
  #   base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
  #   d = OrderedDict(contiguous=base, transposed=base[1].t(),
  #       sliced=torch.arange(10, dtype=torch.float64)[3:7],
  #       half=torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16),
  #       bfloat16=torch.tensor([1.0, -3.5, 256.0], dtype=torch.bfloat16),
  #       num_batches_tracked=torch.tensor(7),
  #       parameter=torch.nn.Parameter(torch.full((2,), 1.5)),
  #       empty=torch.zeros(0, 3))
  #   torch.save(d, "torch_state_dict.pth")
  #   torch.save(d, "torch_state_dict_legacy.pth",
  #              _use_new_zipfile_serialization=False)
  base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  expected = {
      "contiguous": base,
      "transposed": base[1].T,
      "sliced": np.arange(10, dtype=np.float64)[3:7],
      "half": np.array([0.5, -2.0, 65504.0], np.float16),
      "bfloat16": np.array([1.0, -3.5, 256.0], ml_dtypes.bfloat16),
      "num_batches_tracked": np.array(7, np.int64),
      "parameter": np.full((2,), 1.5, np.float32),
      "empty": np.zeros((0, 3), np.float32),
  }
  for name in ("torch_state_dict.pth", "torch_state_dict_legacy.pth"):
    got = torch_format.read_pth(GOLDEN / name)
    assert list(got) == list(expected), name
    for key, value in expected.items():
      assert got[key].dtype == value.dtype, (name, key)
      np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_pickle_naming_other_code_is_refused_unexecuted(tmp_path):
  marker = tmp_path / "ran"
  hostile = (
      b"\x80\x02"
      + _p_global("posix", "system")
      + _p_tuple([_p_str(f"touch {marker}")])
      + b"R."
  )
  path = tmp_path / "hostile.pth"
  _write_pth(path, {}, pickle_bytes=hostile)
  with pytest.raises(
      torch_format.StateDictError,
      match=f"{path}: refusing to unpickle posix.system",
  ):
    torch_format.read_pth(path)
  assert not marker.exists()


def _one_tensor_pickle(tensor: bytes) -> bytes:
  return b"\x80\x02" + _P_ORDERED_DICT + b"(" + _p_str("w") + tensor + b"u."


# Each corruption of a 4×4 float32 file and the words its error must hold.
_CORRUPTIONS = {
    "junk": "neither a zip archive",
    "truncated": "holds 10 bytes, expected 64",
    "not_a_dict": "expected a dict of tensors, found list",
    "past_storage": "reads past its storage of 16 elements",
    "bad_call": "_rebuild_tensor_v2|argument",
    "missing_storage": "storage 'archive/data/7' is missing",
}


@pytest.mark.parametrize("corruption", sorted(_CORRUPTIONS))
def test_malformed_pth_error_names_the_file(tmp_path, corruption):
  path = tmp_path / "bad.pth"
  _write_pth(path, {"w": np.ones((4, 4), np.float32)})
  with zipfile.ZipFile(path) as z:
    records = {n: z.read(n) for n in z.namelist()}
  if corruption == "truncated":
    records["archive/data/0"] = records["archive/data/0"][:10]
  elif corruption == "not_a_dict":
    records["archive/data.pkl"] = b"\x80\x02]q\x00."  # an empty list
  elif corruption == "past_storage":
    records["archive/data.pkl"] = _one_tensor_pickle(
        _p_tensor("0", "FloatStorage", 16, (4, 5), (5, 1))
    )
  elif corruption == "bad_call":
    records["archive/data.pkl"] = _one_tensor_pickle(
        _p_global("torch._utils", "_rebuild_tensor_v2") + b")R"
    )
  elif corruption == "missing_storage":
    records["archive/data.pkl"] = _one_tensor_pickle(
        _p_tensor("7", "FloatStorage", 16, (4, 4), (4, 1))
    )
  with zipfile.ZipFile(path, "w") as z:
    for name, raw in records.items():
      z.writestr(name, raw)
  if corruption == "junk":
    path.write_bytes(b"not a checkpoint")
  with pytest.raises(
      torch_format.StateDictError, match=_CORRUPTIONS[corruption]
  ) as info:
    torch_format.read_pth(path)
  assert str(path) in str(info.value)


def test_unknown_suffix_and_bad_safetensors_name_the_file(tmp_path):
  path = tmp_path / "w.h5"
  path.write_bytes(b"")
  with pytest.raises(torch_format.StateDictError, match=r"w\.h5.*\.h5"):
    torch_format.read_state_dict(path)
  bad = tmp_path / "w.safetensors"
  bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
  with pytest.raises(torch_format.StateDictError, match="w.safetensors"):
    torch_format.read_state_dict(bad)


# ---------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------


def _keras_layer_name(torch_module: str) -> str:
  """'layer2.0.downsample.0' -> 'conv3_block1_0_conv', 'bn1' -> 'conv1_bn'."""
  parts = torch_module.split(".")
  if parts[0] in ("conv1", "bn1"):
    return "conv1_conv" if parts[0] == "conv1" else "conv1_bn"
  prefix = f"conv{int(parts[0][5:]) + 1}_block{int(parts[1]) + 1}"
  if parts[2] == "downsample":
    return f"{prefix}_0_{'conv' if parts[3] == '0' else 'bn'}"
  kind, index = parts[2][:-1], parts[2][-1]  # "conv2" -> ("conv", "2")
  return f"{prefix}_{index}_{kind}"


def _keras_to_torchvision(model, names) -> dict[str, np.ndarray]:
  """Keras ResNet50 weights as a torchvision state dict (biases folded)."""
  out = {}
  modules = sorted({
      n.rsplit(".", 1)[0] for n in names if n != "fc.weight" and n != "fc.bias"
  })
  for module in modules:
    if module.split(".")[-1].startswith("conv") or module.endswith(
        "downsample.0"
    ):
      continue  # filled with the BatchNorm that follows it
    bn = model.get_layer(_keras_layer_name(module)).get_weights()
    conv_module = (
        module[:-1] + "0"
        if module.endswith("downsample.1")
        else module.replace("bn", "conv")
    )
    kernel, bias = model.get_layer(_keras_layer_name(conv_module)).get_weights()
    gamma, beta, mean, var = bn
    out[f"{conv_module}.weight"] = np.transpose(kernel, (3, 2, 0, 1))
    out[f"{module}.weight"], out[f"{module}.bias"] = gamma, beta
    # BN(conv(x) + b) with mean μ equals BN(conv(x)) with mean μ − b.
    out[f"{module}.running_mean"] = mean - bias
    out[f"{module}.running_var"] = var
  kernel, bias = model.get_layer("predictions").get_weights()
  out["fc.weight"], out["fc.bias"] = kernel.T, bias
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _randomize_keras(model, seed=0):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    weights = layer.get_weights()
    if not weights:
      continue
    kind = type(layer).__name__
    if kind == "Conv2D":
      kernel, bias = weights
      fan_in = np.prod(kernel.shape[:3])
      new = [
          rng.normal(0, np.sqrt(2 / fan_in), kernel.shape),
          rng.normal(0, _BN_SHIFT, bias.shape),
      ]
    elif kind == "BatchNormalization":
      n = weights[0].shape
      last = layer.name.endswith(("_3_bn", "_0_bn"))
      gamma = rng.uniform(*(_LAST_BN_SCALE if last else _BN_SCALE), n)
      new = [
          gamma,
          rng.normal(0, _BN_SHIFT, n),
          rng.normal(0, _BN_SHIFT, n),
          rng.uniform(*_BN_VAR, n),
      ]
    elif kind == "Dense":
      kernel, bias = weights
      new = [
          rng.normal(0, 1 / np.sqrt(kernel.shape[0]), kernel.shape),
          rng.normal(0, 0.1, bias.shape),
      ]
    else:
      raise AssertionError(f"unexpected layer with weights: {layer.name}")
    layer.set_weights([w.astype(np.float32) for w in new])


# keras 3.15 calls np.array(variable, copy=False) on its own variables.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)
def test_forward_matches_keras_resnet50_on_random_weights(tmp_path):
  # Keras picks its backend at first import; JAX needs no TensorFlow.
  os.environ.setdefault("KERAS_BACKEND", "jax")
  keras = pytest.importorskip(
      "keras",
      reason=(
          "keras not installed: the reference check needs "
          "keras==3.15.1 (dev extra)"
      ),
  )
  reference = keras.applications.ResNet50(
      weights=None, input_shape=_INPUT_SHAPE[1:], classifier_activation=None
  )
  _randomize_keras(reference)
  x = np.asarray(_images())
  expected = np.asarray(reference(x, training=False))
  layer2 = keras.Model(
      reference.inputs, reference.get_layer("conv3_block4_out").output
  )
  expected_layer2 = np.asarray(layer2([x], training=False))

  v1 = dict(stride_in_1x1=True, bn_epsilon=1.001e-5)
  state_dict = _keras_to_torchvision(
      reference,
      resnet_import.torch_state_dict_mapping(_abstract_model(**v1)),
  )
  models = []
  for suffix, writer in _WRITERS.items():
    path = tmp_path / f"keras_resnet50{suffix}"
    writer(path, state_dict)
    models.append(pretrained.load_resnet50(path, **v1))
  ours = models[0]
  for a, b in zip(
      jax.tree.leaves(nnx.state(models[0])),
      jax.tree.leaves(nnx.state(models[1])),
      strict=True,
  ):
    np.testing.assert_array_equal(a, b)

  got = np.asarray(ours(x))
  scale = max(1.0, float(np.abs(expected).max()))
  diff = float(np.abs(got - expected).max())
  print(
      f"keras: max |logit| {np.abs(expected).max():.4g}, max |diff| {diff:.3g}"
  )
  assert diff <= _REFERENCE_TOLERANCE * scale
  # The logits depend on the image far beyond the tolerance.
  assert (
      np.abs(expected[0] - expected[1]).max()
      > 100 * _REFERENCE_TOLERANCE * scale
  )
  got_layer2 = np.asarray(ours.features(x, until="layer2"))
  np.testing.assert_allclose(
      got_layer2,
      expected_layer2,
      rtol=0,
      atol=1e-5 * np.abs(expected_layer2).max(),
  )


def test_forward_matches_torchvision_resnet50_on_random_weights(tmp_path):
  torch = pytest.importorskip(
      "torch",
      reason=(
          "torch not installed (not in the dev extra: the "
          "PyPI build is several GB; keras is the reference CI runs)"
      ),
  )
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  reference = torchvision.models.resnet50(weights=None)
  with torch.no_grad():  # the same scales as `_random_state_dict`
    for name, module in reference.named_modules():
      if isinstance(module, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(module.weight, mode="fan_in")
      elif isinstance(module, torch.nn.Linear):
        module.weight.normal_(0, module.in_features**-0.5)
      elif isinstance(module, torch.nn.BatchNorm2d):
        last = name.endswith(("bn3", "downsample.1"))
        module.weight.uniform_(*(_LAST_BN_SCALE if last else _BN_SCALE))
        module.bias.normal_(0, _BN_SHIFT)
        module.running_mean.normal_(0, _BN_SHIFT)
        module.running_var.uniform_(*_BN_VAR)
  reference.eval()
  path = tmp_path / "resnet50.pth"
  torch.save(reference.state_dict(), path)
  ours = pretrained.load_resnet50(path)

  x = np.asarray(_images())
  with torch.no_grad():
    expected = reference(torch.tensor(x).permute(0, 3, 1, 2)).numpy()
  got = np.asarray(ours(x))
  scale = max(1.0, float(np.abs(expected).max()))
  diff = float(np.abs(got - expected).max())
  print(
      f"torchvision: max |logit| {np.abs(expected).max():.4g}, max |diff| "
      f"{diff:.3g}"
  )
  assert diff <= _REFERENCE_TOLERANCE * scale
  assert (
      np.abs(expected[0] - expected[1]).max()
      > 100 * _REFERENCE_TOLERANCE * scale
  )
  # Our export loads into torchvision with strict=True.
  reference.load_state_dict(
      {
          k: torch.tensor(v)
          for k, v in resnet_import.export_state_dict(ours).items()
      },
      strict=True,
  )
