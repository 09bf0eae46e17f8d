""".tflite head -> int8 post-training-quantized .tflite head (no TensorFlow).

ai-edge-quantizer's static recipe (int8 weights, per output channel,
symmetric; int8 activations, per tensor, asymmetric, ranges calibrated
by running the float head on the given images) with one change: the
graph input stays float32, so the quantized head keeps the export
contract (float32 pixels 0..255 in). The quantizer then inserts one
QUANTIZE after the input; before the final ROUND it inserts a DEQUANTIZE,
so the rounding and the CAST to int32 run in float as in the float head
and the output stays exact int32 symbols.
"""

from __future__ import annotations

from typing import Iterable
import warnings

import numpy as np

from hecsb_jax.export import tflite

# Recorded in the int8 manifest: what made the head.
RECIPE = ("ai-edge-quantizer static_wi8_ai8 (min/max; weights int8"
          " symmetric per channel, activations int8 asymmetric per tensor),"
          " graph input kept float32")


class QuantizationError(RuntimeError):
  """The quantizer refused the head or produced one that breaks the
  export contract; the message says which."""


def quantize_head(float_tflite: bytes, calibration: Iterable[np.ndarray],
                  *, num_threads: int = 2) -> bytes:
  """The int8 head of a float .tflite head.

  Args:
    float_tflite: the float head (`tflite.convert`), signature
      `tflite.SIGNATURE` with input `tflite.INPUT_NAME`.
    calibration: float32 [1, S, S, 3] pixel arrays (0..255) the
      activation ranges are measured on; at least one.
    num_threads: calibration threads.

  Returns:
    the quantized flatbuffer: float32 input, int32 output, as the float
    head's.

  Raises:
    QuantizationError: no calibration images, a quantizer failure, or a
      result whose input or output type is not the float head's.
  """
  # Imported here: only int8 exports need the quantizer (`export` extra).
  from ai_edge_quantizer import algorithm_manager
  from ai_edge_quantizer import qtyping
  from ai_edge_quantizer import quantizer
  from ai_edge_quantizer import recipe_manager

  samples = [{tflite.INPUT_NAME: np.ascontiguousarray(x, np.float32)}
             for x in calibration]
  if not samples:
    raise QuantizationError("no calibration images: static int8"
                            " quantization measures activation ranges on"
                            " real inputs")
  recipe = recipe_manager.RecipeManager()
  recipe.add_static_config(
      regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
      activation_num_bits=8, weight_num_bits=8)
  # Without this the graph input becomes int8 (scale ~1 for 0..255): a
  # different input contract from the float head's and the manifest's.
  recipe.add_quantization_config(
      regex=".*", operation_name=qtyping.TFLOperationName.INPUT,
      algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
  try:
    with warnings.catch_warnings():
      # LiteRT warns that keeping every intermediate tensor is a debugging
      # mode; recording their ranges is what calibration is.
      warnings.filterwarnings("ignore", ".*experimental_preserve_all_tensors")
      qt = quantizer.Quantizer(float_tflite,
                               recipe.get_quantization_recipe())
      ranges = qt.calibrate({tflite.SIGNATURE: samples},
                            num_threads=num_threads)
      result = qt.quantize(ranges, enable_progress_report=False)
  except Exception as e:  # the quantizer raises many types
    raise QuantizationError(
        f"ai-edge-quantizer failed: {type(e).__name__}: {e}") from e
  data = bytes(result.quantized_model)
  _check_contract(float_tflite, data)
  return data


def _check_contract(float_tflite: bytes, int8_tflite: bytes) -> None:
  """Raises QuantizationError unless both heads have the same signature
  input/output names, shapes and dtypes."""
  from ai_edge_litert.interpreter import Interpreter

  def io(data):
    runner = Interpreter(model_content=data).get_signature_runner(
        tflite.SIGNATURE)
    return {
        name: (tuple(int(n) for n in d["shape"]), np.dtype(d["dtype"]).name)
        for details in (runner.get_input_details(),
                        runner.get_output_details())
        for name, d in details.items()}

  want, got = io(float_tflite), io(int8_tflite)
  if want != got:
    raise QuantizationError(f"the int8 head's signature {got} is not the"
                            f" float head's {want}")
