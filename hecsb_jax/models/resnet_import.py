"""torchvision ResNet state-dict names for `hecsb_jax.models.resnet`.

    torchvision name                  our variable (nnx path)
    conv1.weight                      conv1/kernel
    layer2.0.bn1.running_var          layer2/0/bn1/var
    layer3.0.downsample.0.weight      layer3/0/downsample/conv/kernel
    layer3.0.downsample.1.bias        layer3/0/downsample/bn/bias
    fc.weight                         fc/kernel

A `weights` mapping (layouts, checks and errors are `weights`'s); timm's
ResNets use the same names. Files are read by
`hecsb_jax.data.pretrained.load_resnet50`: this module does no I/O.
"""

from __future__ import annotations

import numpy as np

from hecsb_jax.models import resnet
from hecsb_jax.models import weights

# Tensors of a torchvision state dict that the model has no variable for:
# BatchNorm's step counters only matter to training with momentum=None.
IGNORED = ("*.num_batches_tracked",)


def torch_state_dict_mapping(model: resnet.ResNet) -> dict[str, weights.Entry]:
  """torchvision tensor names -> model variables, for `weights`.

  Args:
    model: a ResNet, concrete or abstract (`nnx.eval_shape`); only which
      blocks have a `downsample` is read.

  Returns:
    One entry per parameter and BatchNorm statistic. Use with
    `weights.assign_state_dict(..., ignore=IGNORED)`.
  """
  m = {
      **weights.conv("conv1", ("conv1",)),
      **weights.batch_norm("bn1", ("bn1",)),
      **weights.linear("fc", ("fc",)),
  }
  for stage in ("layer1", "layer2", "layer3", "layer4"):
    for i, block in enumerate(getattr(model, stage)):
      src, dst = f"{stage}.{i}", (stage, i)
      for j in (1, 2, 3):
        m |= weights.conv(f"{src}.conv{j}", (*dst, f"conv{j}"))
        m |= weights.batch_norm(f"{src}.bn{j}", (*dst, f"bn{j}"))
      if block.downsample is not None:
        # torchvision's downsample is a Sequential(conv, bn).
        down = (*dst, "downsample")
        m |= weights.conv(f"{src}.downsample.0", (*down, "conv"))
        m |= weights.batch_norm(f"{src}.downsample.1", (*down, "bn"))
  return m


def export_state_dict(model: resnet.ResNet) -> dict[str, np.ndarray]:
  """The model's variables in torchvision's names and layout.

  `torchvision.models.resnet50().load_state_dict(...)` accepts the result
  (after `torch.from_numpy`) with strict=True, for which the BatchNorm
  `num_batches_tracked` counters are added as int64 zeros.

  Args:
    model: a concrete ResNet.

  Returns:
    {torchvision name: float32 array (int64 for the counters)}, contiguous.
  """
  out = weights.state_dict_from_model(model, torch_state_dict_mapping(model))
  for name in [n for n in out if n.endswith(".running_var")]:
    counter = name.removesuffix("running_var") + "num_batches_tracked"
    out[counter] = np.zeros((), np.int64)
  return out
