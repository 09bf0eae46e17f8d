"""The head as serialized StableHLO (`jax.export`): a portable, versioned
artifact any JAX (or other StableHLO consumer) reloads without this code.

    exported = export_head(head, spec)
    Path("head.stablehlo").write_bytes(exported.serialize())
    symbols = load("head.stablehlo").call(pixels)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import jax


def export_head(head: Callable[[jax.Array], jax.Array],
                spec: jax.ShapeDtypeStruct) -> jax.export.Exported:
  """Traces ``head`` at ``spec`` for the CPU (what edge devices have).

  Args:
    head: pure function of one array (`head.head_function`).
    spec: its input shape and dtype.

  Returns:
    the `jax.export.Exported`; its ``mlir_module()`` is also what the
    LiteRT converter starts from.
  """
  return jax.export.export(jax.jit(head), platforms=("cpu",))(spec)


def load(path: str | os.PathLike) -> jax.export.Exported:
  """Deserializes a head written by `export_head(...).serialize()`.

  Raises:
    FileNotFoundError: no file there (named).
    ValueError: not a serialized jax.export artifact (names the path).
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no StableHLO head there")
  try:
    return jax.export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:  # flatbuffer errors have no common type
    raise ValueError(f"{path}: not a serialized jax.export head ({e})"
                     ) from None
