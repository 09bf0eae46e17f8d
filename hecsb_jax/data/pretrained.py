"""Pretrained weight files: read them and fill a model.

The I/O half of weight import; the name mappings and the checks live in
the pure `hecsb_jax.models.weights` (and each architecture's mapping). The
shared data folder holds EfficientNet-Lite0 as a PyTorch state dict saved
to .npz; ResNet-50 comes as torchvision's .pth or .safetensors:

    model = load_efficientnet_lite0(data_dir / EFFICIENTNET_LITE0_NPZ)
    model = load_resnet50("resnet50-0676ba61.pth")
"""

from __future__ import annotations

import os
import zipfile
import zlib

from flax import nnx
import numpy as np

from hecsb_jax.data.errors import DataFormatError
from hecsb_jax.models import efficientnet_lite
from hecsb_jax.models import resnet
from hecsb_jax.models import resnet_import
from hecsb_jax.data import torch_format
from hecsb_jax.models import weights

# Relative to the shared data folder (../shared/data).
EFFICIENTNET_LITE0_NPZ = (
    "weights/efficientnet_lite0/efficientnet_lite0_state_dict.npz"
)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads every array of an .npz file into memory.

  Args:
    path: the .npz file.

  Returns:
    name -> array, in the file's order.

  Raises:
    FileNotFoundError: `path` does not exist.
    DataFormatError: it is not a readable .npz of plain arrays.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: weights file not found")
  try:
    with np.load(path, allow_pickle=False) as npz:
      return {name: npz[name] for name in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise DataFormatError(
        f"{path}: expected an .npz of arrays (numpy.savez), could not read"
        f" it: {e}"
    ) from e


def load_efficientnet_lite0(
    path: str | os.PathLike,
    *,
    depthwise_impl: str = "shifted_sum",
) -> efficientnet_lite.EfficientNetLite0:
  """EfficientNet-Lite0 with the weights of a PyTorch-named .npz state dict.

  Args:
    path: e.g. `<data dir>/` + EFFICIENTNET_LITE0_NPZ (247 arrays).
    depthwise_impl: see `efficientnet_lite.DEPTHWISE_IMPLS`.

  Returns:
    the model in inference mode (BatchNorm uses the stored statistics).

  Raises:
    FileNotFoundError, DataFormatError: as `read_npz`.
    weights.WeightsError: a tensor is missing, extra or misshaped; the
      message names `path` and each tensor.
  """
  arrays = read_npz(path)
  # Abstract construction: every variable is filled from the file, so a
  # random initialization (seconds of compiling on a CPU) would be wasted.
  model = nnx.eval_shape(
      lambda: efficientnet_lite.EfficientNetLite0(
          depthwise_impl=depthwise_impl, rngs=nnx.Rngs(0)
      )
  )
  weights.assign_state_dict(
      model,
      efficientnet_lite.torch_state_dict_mapping(model),
      arrays,
      os.fspath(path),
  )
  model.eval()
  return model


def load_resnet50(
    path: str | os.PathLike,
    *,
    num_classes: int = 1000,
    stride_in_1x1: bool = False,
    bn_epsilon: float = 1e-5,
) -> resnet.ResNet:
  """ResNet-50 with the weights of a torchvision state-dict file.

  Args:
    path: `.safetensors`, or `.pth`/`.pt`/`.bin` written by torch.save
      (float32, float16 or bfloat16 tensors; stored as float32).
    num_classes: rows of `fc.weight` in the file.
    stride_in_1x1: as `resnet.ResNet` (False for torchvision's weights).
    bn_epsilon: as `resnet.ResNet` (1e-5 for torchvision's weights).

  Returns:
    the model in inference mode (BatchNorm uses the stored statistics).

  Raises:
    torch_format.StateDictError: naming `path`, when it is unreadable.
    weights.WeightsError: a tensor is missing, extra or misshaped; the
      message names `path` and each tensor (`num_batches_tracked` counters
      are ignored).
  """
  arrays = torch_format.read_state_dict(path)
  # Abstract construction, as above.
  model = nnx.eval_shape(
      lambda: resnet.resnet50(
          num_classes,
          stride_in_1x1=stride_in_1x1,
          bn_epsilon=bn_epsilon,
          rngs=nnx.Rngs(0),
      )
  )
  weights.assign_state_dict(
      model,
      resnet_import.torch_state_dict_mapping(model),
      arrays,
      os.fspath(path),
      ignore=resnet_import.IGNORED,
  )
  model.eval()
  return model
