"""Filling an nnx model from a PyTorch-style state dict held in memory.

A mapping names, for every source tensor, the model variable it fills and
the axis permutation that turns the source layout into Flax's:

    "_conv_stem.weight" ──transpose(2, 3, 1, 0)──► stem/conv/kernel
       [O, I, kh, kw]                               [kh, kw, I, O]

`assign_state_dict` checks the whole correspondence before it writes
anything: each source tensor is used once, each model variable (parameters
and BatchNorm statistics) is filled, and each shape fits. The helpers
`conv`, `batch_norm` and `linear` give the entries of the layers torchvision
and the EfficientNet ports share, so importers of other backbones only list
their layer names. Reading the file is the caller's: this module does no I/O,
and `source` is only the name errors report.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import NamedTuple

from flax import nnx
import jax.numpy as jnp
import numpy as np

# PyTorch OIHW convolution kernels -> Flax HWIO (depthwise [C, 1, k, k]
# becomes [k, k, 1, C], the grouped layout Flax uses).
OIHW_TO_HWIO = (2, 3, 1, 0)
# PyTorch Linear weight [out, in] -> Flax kernel [in, out].
OI_TO_IO = (1, 0)


class WeightsError(ValueError):
  """A state dict does not fit the model; the message names each problem."""


class Entry(NamedTuple):
  """Where one source tensor goes.

  Attributes:
    target: path of the model variable, e.g. ("blocks", 3, "depthwise",
      "kernel"), as `nnx.iter_graph` spells it.
    perm: axes permutation from the source layout to the target's
      (target = source.transpose(perm)); None keeps the layout.
  """

  target: tuple
  perm: tuple[int, ...] | None = None


def conv(source: str, target: tuple) -> dict[str, Entry]:
  """Entries of a bias-free convolution `{source}.weight` (OIHW)."""
  return {f"{source}.weight": Entry((*target, "kernel"), OIHW_TO_HWIO)}


def batch_norm(source: str, target: tuple) -> dict[str, Entry]:
  """Entries of a BatchNorm: weight, bias, running mean and variance."""
  names = {
      "weight": "scale",
      "bias": "bias",
      "running_mean": "mean",
      "running_var": "var",
  }
  return {f"{source}.{k}": Entry((*target, v)) for k, v in names.items()}


def linear(source: str, target: tuple) -> dict[str, Entry]:
  """Entries of a Linear layer with bias ([out, in] weight)."""
  return {
      f"{source}.weight": Entry((*target, "kernel"), OI_TO_IO),
      f"{source}.bias": Entry((*target, "bias")),
  }


def model_variables(model: nnx.Module) -> dict[tuple, nnx.Variable]:
  """Every variable of `model` (parameters and statistics) by path."""
  return {
      tuple(path): node
      for path, node in nnx.iter_graph(model)
      if isinstance(node, nnx.Variable)
  }


def _source_shape(target_shape: tuple, perm: tuple[int, ...] | None) -> tuple:
  """The source shape that `perm` maps onto `target_shape`."""
  if perm is None:
    return tuple(target_shape)
  shape = [0] * len(perm)
  for j, p in enumerate(perm):
    shape[p] = target_shape[j]
  return tuple(shape)


def _path(target: tuple) -> str:
  return "/".join(str(p) for p in target)


def assign_state_dict(
    model: nnx.Module,
    mapping: Mapping[str, Entry],
    arrays: Mapping[str, np.ndarray],
    source: str,
    *,
    ignore: Collection[str] = (),
) -> None:
  """Copies `arrays` into `model`'s variables as `mapping` says, in place.

  Args:
    model: the nnx module to fill.
    mapping: source tensor name -> Entry; must cover every model variable.
    arrays: source tensor name -> array (e.g. an opened .npz); every one
      must be in `mapping` or matched by `ignore`.
    source: what `arrays` came from (a file path), for error messages.
    ignore: `fnmatch` patterns of tensors the model has no use for, e.g.
      "*.num_batches_tracked" (PyTorch's BatchNorm step counters).

  The model may be abstract (built under `nnx.eval_shape`): every variable
  is overwritten, so loading need not pay for a random initialization.
  Floats of any width (float16, bfloat16, ...) are stored in the
  variable's dtype.

  Raises:
    WeightsError: naming `source` and every missing, unexpected or
      misshaped tensor (expected vs found shape, in the source's layout),
      non-float tensor, and model variable the mapping leaves unfilled.
      Nothing is written unless there is no problem at all.
  """
  arrays = {
      name: array
      for name, array in arrays.items()
      if not any(fnmatchcase(name, p) for p in ignore)
  }
  variables = model_variables(model)
  problems = []
  unfilled = set(variables) - {e.target for e in mapping.values()}
  problems += [
      f"model variable {_path(t)} is not filled by any tensor"
      for t in sorted(unfilled, key=_path)
  ]
  problems += [
      f"unexpected tensor {name!r} {tuple(np.shape(arrays[name]))}"
      for name in sorted(set(arrays) - set(mapping))
  ]
  values = {}
  for name, entry in mapping.items():
    if entry.target not in variables:
      raise KeyError(
          f"mapping targets {_path(entry.target)} for {name!r},"
          " which the model does not have"
      )
    want = _source_shape(variables[entry.target].get_value().shape, entry.perm)
    if name not in arrays:
      problems.append(f"missing tensor {name!r} (expected shape {want})")
      continue
    array = np.asarray(arrays[name])
    if array.shape != want:
      problems.append(
          f"tensor {name!r}: expected shape {want}, found {array.shape}"
      )
    # jnp's issubdtype, unlike numpy's, counts ml_dtypes' bfloat16.
    elif not jnp.issubdtype(array.dtype, jnp.floating):
      problems.append(f"tensor {name!r}: expected floats, found {array.dtype}")
    else:
      if entry.perm is not None:
        array = array.transpose(entry.perm)
      values[entry.target] = array
  if problems:
    raise WeightsError(
        f"{source}: state dict does not fit {type(model).__name__}"
        f" ({len(problems)} problem(s)):\n  "
        + "\n  ".join(problems)
    )
  for target, array in values.items():
    variable = variables[target]
    variable.set_value(jnp.asarray(array, dtype=variable.get_value().dtype))


def state_dict_from_model(
    model: nnx.Module, mapping: Mapping[str, Entry]
) -> dict[str, np.ndarray]:
  """The inverse of `assign_state_dict`: model variables in source layout.

  Exports a model to the source framework, and lets tests write a state
  dict from a model they built (no pretrained file needed) and check the
  round trip.

  Returns:
    source tensor name -> contiguous array (file writers such as
    safetensors want them so), in `mapping`'s order.
  """
  variables = model_variables(model)
  out = {}
  for name, entry in mapping.items():
    array = np.asarray(variables[entry.target].get_value())
    if entry.perm is not None:
      array = array.transpose(np.argsort(entry.perm))
    out[name] = np.ascontiguousarray(array)
  return out
