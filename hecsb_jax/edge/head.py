"""The exported head under the LiteRT (TensorFlow Lite) interpreter.

    head = Head.from_manifest(load_manifest(export_dir), num_threads=1)
    symbols = head(pixels)   # float32 [1, 224, 224, 3] 0..255 -> int32
                             # [1, 28, 28, 32]

Works with ai-edge-litert 2.x (what x86-64 CI installs), ai-edge-litert 1.4
(what runs under qemu-aarch64 and on older Pis; it needs numpy 1.26) and
the older tflite_runtime: all three expose the same classic `Interpreter`
(model_path, num_threads, allocate_tensors, set_tensor, invoke,
get_tensor), so only that subset is used. Their newer APIs
(`CompiledModel`) differ and are not needed for one CPU call.
"""

from __future__ import annotations

import importlib
from importlib import metadata
import os
from pathlib import Path
from typing import Sequence

import numpy as np

# Tried in order; the first that imports is used.
RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


class HeadError(RuntimeError):
  """The .tflite file is missing, unreadable or has the wrong signature."""


def runtime():
  """(module name, version, Interpreter class) of the first LiteRT runtime.

  Raises:
    HeadError: none of `RUNTIMES` is installed (says what to install).
  """
  errors = []
  for name in RUNTIMES:
    try:
      module = importlib.import_module(name)
    except ImportError as e:
      errors.append(f"{name}: {e}")
      continue
    root = name.partition(".")[0]
    try:
      version = metadata.version(root.replace("_", "-"))
    except metadata.PackageNotFoundError:  # e.g. copied in, not installed
      version = "unknown"
    return root, version, module.Interpreter
  raise HeadError("no LiteRT runtime: pip install ai-edge-litert (or"
                  " tflite-runtime); tried " + "; ".join(errors))


class Head:
  """One .tflite head: float32 NHWC pixels in, int32 symbols out, batch 1.

  Attributes:
    path: the .tflite file.
    input_shape: (1, H, W, 3).
    output_shape: (1, *symbol shape).
    runtime: e.g. "ai_edge_litert 2.3.0".
  """

  def __init__(self, path: str | os.PathLike,
               input_shape: Sequence[int],
               output_shape: Sequence[int],
               num_threads: int = 1):
    """Loads the model and checks its signature.

    Args:
      path: a .tflite file.
      input_shape: the expected input shape, (1, H, W, 3).
      output_shape: the expected output shape, (1, *symbols).
      num_threads: interpreter CPU threads (1: what a Pi core gives).

    Raises:
      FileNotFoundError: ``path`` does not exist (named).
      HeadError: the interpreter cannot load it, or its input / output is
        not one float32 ``input_shape`` / int32 ``output_shape`` tensor.
    """
    self.path = Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"{self.path}: head model not found (expected"
                              " the .tflite file of an export)")
    if num_threads < 1:
      raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    name, version, interpreter = runtime()
    self.runtime = f"{name} {version}"
    try:
      self._interp = interpreter(model_path=str(self.path),
                                 num_threads=num_threads)
      self._interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
      raise HeadError(f"{self.path}: {self.runtime} cannot load it: {e}"
                      ) from e
    inputs = self._interp.get_input_details()
    outputs = self._interp.get_output_details()
    self.input_shape = tuple(int(n) for n in input_shape)
    self.output_shape = tuple(int(n) for n in output_shape)
    self._input = self._check(inputs, "input", self.input_shape, np.float32)
    self._output = self._check(outputs, "output", self.output_shape,
                               np.int32)

  def _check(self, details, what, shape, dtype) -> int:
    """The tensor index of the single `what` tensor, or HeadError."""
    if len(details) != 1:
      raise HeadError(f"{self.path}: expected one {what} tensor, found"
                      f" {len(details)}")
    d = details[0]
    got = tuple(int(n) for n in d["shape"])
    if got != shape or np.dtype(d["dtype"]) != np.dtype(dtype):
      raise HeadError(
          f"{self.path}: {what} is {np.dtype(d['dtype']).name} {list(got)};"
          f" the manifest expects {np.dtype(dtype).name} {list(shape)}")
    return int(d["index"])

  @classmethod
  def from_manifest(cls, manifest, num_threads: int = 1) -> "Head":
    """The head of a loaded export (`hecsb_jax.edge.manifest.Manifest`)."""
    size = manifest.input.size
    return cls(manifest.path("tflite"), (1, size, size, 3),
               (1, *manifest.symbols.shape), num_threads)

  def __call__(self, pixels: np.ndarray) -> np.ndarray:
    """float32 (or uint8) [1, H, W, 3] pixels 0..255 -> int32 symbols.

    Raises:
      ValueError: ``pixels`` has the wrong shape.
    """
    pixels = np.asarray(pixels)
    if pixels.shape != self.input_shape:
      raise ValueError(f"expected pixels of shape {list(self.input_shape)},"
                       f" got {list(pixels.shape)}")
    self._interp.set_tensor(self._input,
                            np.ascontiguousarray(pixels, np.float32))
    self._interp.invoke()
    # get_tensor copies: the next invoke overwrites the interpreter's buffer.
    return np.asarray(self._interp.get_tensor(self._output), np.int32)
