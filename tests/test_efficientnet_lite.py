"""EfficientNet-Lite0: shapes, split exactness, depthwise forms, weights.

Random-weight models are built abstractly and filled from numpy (a random
nnx initialization costs ~15 s of op compiling on a 2-core CPU); forwards
run eagerly on small images, which is op for op what `features`/`tail`
compute, so head -> tail must equal the whole network bit for bit.
"""

import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import pretrained
from hecsb_jax.data.errors import DataFormatError
from hecsb_jax.models import efficientnet_lite
from hecsb_jax.models import weights
from hecsb_jax.models.efficientnet_lite import EfficientNetLite0

NUM_TENSORS = 247  # in the shared .npz


def random_model(seed=0, impl="shifted_sum"):
  """EfficientNetLite0 with random weights of sensible scale, quickly."""
  model = nnx.eval_shape(
      lambda: EfficientNetLite0(depthwise_impl=impl, rngs=nnx.Rngs(0))
  )
  rng = np.random.default_rng(seed)
  for path, variable in weights.model_variables(model).items():
    shape = variable.get_value().shape
    if path[-1] == "var":
      value = rng.uniform(0.5, 1.5, shape)
    elif path[-1] == "kernel":
      value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
    else:
      value = rng.normal(0, 0.1, shape)
    variable.set_value(jnp.asarray(value, jnp.float32))
  return model


@pytest.fixture(scope="module")
def model():
  # Grouped depthwise: run eagerly, its few primitives compile faster than
  # the jitted shifted sum does once per block shape.
  return random_model(impl="grouped")


@pytest.fixture(scope="module")
def images():
  # numpy, not jax.random: threefry would compile once per shape.
  return np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)


def test_split_points_are_named_in_order(model):
  assert model.split_points == (
      "stem",
      *(f"block{i}" for i in range(16)),
      "conv_head",
      "pool",
  )


def test_feature_shapes_at_224(model):
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((3, 224, 224, 3), jnp.float32)

  def shape(point):
    fn = lambda s, x: nnx.merge(graphdef, s).features(x, until=point)
    return jax.eval_shape(fn, state, x).shape

  assert shape("stem") == (3, 112, 112, 32)
  assert shape("block0") == (3, 112, 112, 16)
  assert shape("block2") == (3, 56, 56, 24)
  assert shape("block4") == (3, 28, 28, 40)  # end of the stride-8 stage
  assert shape("block10") == (3, 14, 14, 112)
  assert shape("block15") == (3, 7, 7, 320)
  assert shape("conv_head") == (3, 7, 7, 1280)
  assert shape("pool") == (3, 1280)
  logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
  assert logits.shape == (3, 1000) and logits.dtype == jnp.float32


def test_stride_two_blocks_are_1_3_5_11(model):
  strided = [i for i, b in enumerate(model.blocks) if b.depthwise.stride == 2]
  assert strided == [1, 3, 5, 11]


def test_head_then_tail_equals_whole_network_at_every_split(model, images):
  whole = np.asarray(model(images))
  assert whole.shape == (2, 1000) and np.all(np.isfinite(whole))
  for point in model.split_points:
    h = model.features(images, until=point)
    np.testing.assert_array_equal(
        np.asarray(model.tail(h, after=point)), whole, err_msg=point
    )


def test_unknown_split_point_names_the_choices(model, images):
  with pytest.raises(ValueError, match="block16.*'stem'"):
    model.features(images, until="block16")


@pytest.mark.parametrize(
    "kernel, stride, height, width",
    [(3, 2, 7, 9), (5, 2, 10, 10), (5, 1, 6, 5)],
)
def test_shifted_sum_equals_grouped_convolution(kernel, stride, height, width):
  rng = np.random.default_rng(kernel * 100 + height)
  x = jnp.asarray(rng.normal(size=(2, height, width, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 6)), jnp.float32)
  want = jax.lax.conv_general_dilated(
      x,
      w,
      (stride, stride),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=6,
  )
  got = efficientnet_lite.depthwise_shifted_sum(x, w, stride)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_same_padding_is_tensorflow_same():
  # Stride 2 on an even size: the odd pixel of padding goes after.
  assert efficientnet_lite.same_padding(224, 3, 2) == (0, 1)
  assert efficientnet_lite.same_padding(28, 5, 2) == (1, 2)
  assert efficientnet_lite.same_padding(7, 5, 2) == (2, 2)
  assert efficientnet_lite.same_padding(14, 3, 1) == (1, 1)


def test_both_depthwise_impls_give_the_same_logits(images):
  shifted, grouped = random_model(1, "shifted_sum"), random_model(1, "grouped")
  np.testing.assert_allclose(shifted(images), grouped(images), atol=1e-5)


# ------------------------------------------------------------------ weights


def _state_dict(model):
  mapping = efficientnet_lite.torch_state_dict_mapping(model)
  return weights.state_dict_from_model(model, mapping)


def test_state_dict_round_trips_through_npz(model, images, tmp_path):
  arrays = _state_dict(model)
  assert len(arrays) == NUM_TENSORS
  assert arrays["_conv_stem.weight"].shape == (32, 3, 3, 3)  # OIHW
  assert arrays["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
  assert arrays["_fc.weight"].shape == (1000, 1280)
  path = tmp_path / "w.npz"
  np.savez(path, **arrays)
  loaded = pretrained.load_efficientnet_lite0(path)
  got, want = weights.model_variables(loaded), weights.model_variables(model)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(
        got[key].get_value(), want[key].get_value(), err_msg=str(key)
    )
  np.testing.assert_array_equal(loaded(images), model(images))


def _load_error(arrays, tmp_path):
  path = tmp_path / "broken.npz"
  np.savez(path, **arrays)
  with pytest.raises(weights.WeightsError) as info:
    pretrained.load_efficientnet_lite0(path)
  message = str(info.value)
  assert str(path) in message
  return message


def test_missing_tensor_is_named_with_its_shape(model, tmp_path):
  arrays = _state_dict(model)
  del arrays["_blocks.3._depthwise_conv.weight"]
  message = _load_error(arrays, tmp_path)
  assert re.search(
      r"missing tensor '_blocks\.3\._depthwise_conv\.weight'.*"
      r"\(144, 1, 5, 5\)",
      message,
  )


def test_misshaped_tensor_reports_expected_and_found(model, tmp_path):
  arrays = _state_dict(model)
  arrays["_fc.weight"] = np.zeros((1000, 1281), np.float32)
  arrays["_bn0.running_var"] = np.ones((33,), np.float32)
  message = _load_error(arrays, tmp_path)
  assert (
      "'_fc.weight': expected shape (1000, 1280), found (1000, 1281)" in message
  )
  assert "'_bn0.running_var': expected shape (32,), found (33,)" in message


def test_extra_tensor_is_refused(model, tmp_path):
  arrays = _state_dict(model)
  arrays["_blocks.16._bn0.weight"] = np.ones((8,), np.float32)
  assert "unexpected tensor '_blocks.16._bn0.weight'" in _load_error(
      arrays, tmp_path
  )


def test_unreadable_weights_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.npz"):
    pretrained.load_efficientnet_lite0(tmp_path / "nothing.npz")
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip file")
  with pytest.raises(DataFormatError, match="bad.npz.*expected an .npz"):
    pretrained.load_efficientnet_lite0(bad)


def test_pretrained_weights_classify_sample_images(shared_data):
  """Every 25th dev image (32): the full eval gets 27 right; random ~0."""
  npz = shared_data(pretrained.EFFICIENTNET_LITE0_NPZ)
  folder = shared_data("imagenet_samples")
  model = pretrained.load_efficientnet_lite0(npz)
  assert len(pretrained.read_npz(npz)) == NUM_TENSORS
  examples = imagenet_folder.read_split(folder, "dev")[::25]
  assert len(examples) == 32
  x = imagenet_folder.normalize(imagenet_folder.decode_all(examples))
  labels = np.array([e.label for e in examples])
  logits = np.asarray(model(x))
  top5 = np.argsort(-logits, axis=1)[:, :5]
  top1 = np.mean(top5[:, 0] == labels)
  assert top1 >= 0.75, top1
  assert np.mean(np.any(top5 == labels[:, None], axis=1)) >= 0.9
