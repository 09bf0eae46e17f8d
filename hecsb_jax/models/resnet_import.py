"""torchvision ResNet state dicts in and out of `hecsb_jax.models.resnet`.

    resnet50-*.pth / model.safetensors
        │ torch_format.read_state_dict        {torchvision name: array}
        ▼
    import_state_dict(model, state_dict)      every leaf checked, then set
        │   conv weight [O, I, kh, kw] → kernel [kh, kw, I, O]
        │   fc weight   [out, in]      → kernel [in, out]
        │   BN weight/bias → scale/bias (Param);
        │   running_mean/var → mean/var (BatchStat)
        ▼
    ResNet (channels-last)                    export_state_dict: the inverse

Names are torchvision's (`conv1.weight`, `layer2.3.bn2.running_var`,
`layer3.0.downsample.0.weight`, `fc.bias`; timm's ResNets use the same).
`*.num_batches_tracked` counters are ignored on import. Any other tensor
the model lacks, any tensor of the model the file lacks, and any shape that
differs raise `StateDictError` naming the file, the tensor and both shapes.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from flax import nnx
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from hecsb_jax.models import resnet
from hecsb_jax.models.torch_format import read_state_dict
from hecsb_jax.models.torch_format import StateDictError

__all__ = [
    "StateDictError",
    "export_state_dict",
    "import_state_dict",
    "load_resnet50",
    "torchvision_names",
]

# Module-path renames from our attribute names to torchvision's Sequential
# indices, and leaf renames from Flax's variable names to torch's.
_MODULE_NAMES = {"conv": "0", "bn": "1"}  # inside `downsample` only
_LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_IGNORED_SUFFIX = ".num_batches_tracked"
_MAX_LISTED = 12


def _torch_name(path: tuple[Any, ...]) -> str:
  """Our variable's path -> its torchvision name.

  ('layer1', 0, 'downsample', 'conv', 'kernel')
  -> 'layer1.0.downsample.0.weight'
  """
  parts = [str(p) for p in path[:-1]]
  for i in range(1, len(parts)):
    if parts[i - 1] == "downsample":
      parts[i] = _MODULE_NAMES[parts[i]]
  leaf = path[-1]
  if leaf not in _LEAF_NAMES:
    raise ValueError(f"no torchvision name for variable {path}")
  return ".".join(parts + [_LEAF_NAMES[leaf]])


def _to_torch(value: np.ndarray) -> np.ndarray:
  """Our layout -> torch's: HWIO -> OIHW for convs, [in, out] -> [out, in]."""
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 2:
    return value.T
  return value


def _from_torch(value: np.ndarray) -> np.ndarray:
  """torch's layout -> ours: the inverse of `_to_torch`."""
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:
    return value.T
  return value


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def torchvision_names(model: resnet.ResNet) -> dict[str, tuple[Any, ...]]:
  """Maps each torchvision tensor name to the path of our variable.

  Args:
    model: a ResNet (concrete or from `nnx.eval_shape`).

  Returns:
    {torchvision name: nnx state path}, one entry per Param and BatchStat.
  """
  return {
      _torch_name(path): path for path, _ in nnx.to_flat_state(nnx.state(model))
  }


def _is_float(dtype) -> bool:
  # ml_dtypes' bfloat16 is no np.floating subtype.
  return np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16


def _problems(
    expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any]
) -> list[str]:
  """Every missing, extra, misshaped or non-float tensor, as sentences."""
  found = []
  for name, shape in expected.items():
    if name not in state_dict:
      found.append(f"missing tensor {name!r} (expected shape {shape})")
      continue
    value = state_dict[name]
    if tuple(value.shape) != shape:
      found.append(
          f"tensor {name!r}: expected shape {shape}, found {tuple(value.shape)}"
      )
    elif not _is_float(value.dtype):
      found.append(
          f"tensor {name!r}: expected floating point, found {value.dtype}"
      )
  for name, value in state_dict.items():
    if name not in expected and not name.endswith(_IGNORED_SUFFIX):
      found.append(
          f"unexpected tensor {name!r} with shape {tuple(value.shape)}"
      )
  return found


def import_state_dict(
    model: resnet.ResNet,
    state_dict: Mapping[str, np.ndarray],
    *,
    source: str = "<state dict>",
) -> None:
  """Sets every parameter and BatchNorm statistic of `model`, in place.

  Nothing is changed unless every tensor fits: the whole state dict is
  checked first.

  Args:
    model: a ResNet, concrete or abstract (`nnx.eval_shape`).
    state_dict: {torchvision name: array} in torch's layout (float32,
      float16 or bfloat16; stored as float32).
    source: what to call the weights in errors (the file's path).

  Raises:
    StateDictError: listing, with `source`, each missing, unexpected or
      misshaped tensor with its expected and found shape.
  """
  flat = nnx.to_flat_state(nnx.state(model))
  expected = {
      _torch_name(path): _torch_shape(tuple(var.get_value().shape))
      for path, var in flat
  }
  problems = _problems(expected, state_dict)
  if problems:
    more = len(problems) - _MAX_LISTED
    listed = "; ".join(problems[:_MAX_LISTED])
    if more > 0:
      listed += f"; and {more} more"
    raise StateDictError(
        f"{source}: {len(problems)} tensor(s) do not fit the ResNet: {listed}"
    )
  # nnx.state holds the model's own Variables: setting them sets the model.
  for path, var in flat:
    value = _from_torch(np.asarray(state_dict[_torch_name(path)]))
    var.set_value(jnp.asarray(value, jnp.float32))


def export_state_dict(model: resnet.ResNet) -> dict[str, np.ndarray]:
  """The model's variables in torchvision's names and layout.

  `torchvision.models.resnet50().load_state_dict(...)` accepts the result
  (after `torch.from_numpy`) with strict=True: the BatchNorm
  `num_batches_tracked` counters are included, as int64 zeros.

  Args:
    model: a concrete ResNet.

  Returns:
    {torchvision name: float32 array (int64 for the counters)}, contiguous.
  """
  out = {}
  for path, var in nnx.to_flat_state(nnx.state(model)):
    name = _torch_name(path)
    out[name] = np.ascontiguousarray(
        _to_torch(np.asarray(var.get_value(), np.float32))
    )
    if path[-1] == "var":
      out[name.rsplit(".", 1)[0] + _IGNORED_SUFFIX] = np.zeros((), np.int64)
  return out


def load_resnet50(
    path: str | os.PathLike,
    *,
    num_classes: int = 1000,
    stride_in_1x1: bool = False,
    bn_epsilon: float = 1e-5,
) -> resnet.ResNet:
  """Builds a ResNet-50 from a torchvision state-dict file, in eval mode.

  The model is built abstractly (no random initialization) and every
  variable is then taken from the file.

  Args:
    path: `.safetensors`, or `.pth`/`.pt`/`.bin` written by torch.save.
    num_classes: rows of `fc.weight` in the file.
    stride_in_1x1: as `resnet.ResNet` (False for torchvision's weights).
    bn_epsilon: as `resnet.ResNet` (1e-5 for torchvision's weights).

  Returns:
    The model with BatchNorm on its running statistics (`model.eval()`).

  Raises:
    StateDictError: naming the file, when it is unreadable or a tensor is
      missing, unexpected or misshaped.
  """
  state_dict = read_state_dict(path)
  model = nnx.eval_shape(
      lambda: resnet.resnet50(
          num_classes,
          stride_in_1x1=stride_in_1x1,
          bn_epsilon=bn_epsilon,
          rngs=nnx.Rngs(0),
      )
  )
  import_state_dict(model, state_dict, source=os.fspath(path))
  model.eval()
  return model
