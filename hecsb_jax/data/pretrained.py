"""Pretrained weight files: read them and fill a model.

The I/O half of weight import; the name mapping and the checks live in the
pure `hecsb_jax.models.weights`. The shared data folder holds
EfficientNet-Lite0 as a PyTorch state dict saved to .npz:

    model = load_efficientnet_lite0(data_dir / EFFICIENTNET_LITE0_NPZ)
"""

from __future__ import annotations

import os
import zipfile
import zlib

from flax import nnx
import numpy as np

from hecsb_jax.data.errors import DataFormatError
from hecsb_jax.models import efficientnet_lite
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
