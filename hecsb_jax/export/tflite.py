"""StableHLO -> .tflite with litert-converter (no TensorFlow).

litert-converter 0.5.0 has no high-level JAX entry point; it exposes the
MLIR pipeline that litert-torch drives (litert_torch/_convert): parse the
StableHLO module into its MLIR context, name the signature, run the
StableHLO -> TFL passes, export the flatbuffer. `jax.export` gives us the
StableHLO text with every parameter as a constant, so that is all a JAX
function needs.

The result runs under `ai_edge_litert.interpreter.Interpreter`; its
signature "serving_default" takes INPUT_NAME and returns OUTPUT_NAME.
"""

from __future__ import annotations

import jax

SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "symbols"


class ConversionError(RuntimeError):
  """The converter refused the module; the message carries its reason."""


def convert(exported: jax.export.Exported) -> bytes:
  """The .tflite flatbuffer of a one-input, one-output exported function.

  Args:
    exported: from `stablehlo.export_head`.

  Returns:
    the flatbuffer bytes.

  Raises:
    ConversionError: an op the converter cannot lower (its message).
  """
  # Imported here: only exporting needs the converter (the `export` extra).
  from litert_converter import converter_api_ext
  from litert_converter.mlir import ir
  from litert_converter.mlir import passmanager

  if len(exported.in_avals) != 1 or len(exported.out_avals) != 1:
    raise ValueError("convert takes a function of one array to one array,"
                     f" got {len(exported.in_avals)} inputs and"
                     f" {len(exported.out_avals)} outputs")
  context = ir.Context()
  converter_api_ext.prepare_mlir_context(context)
  with context:
    try:
      module = ir.Module.parse(exported.mlir_module())
      converter_api_ext.set_signature(
          module.operation, signature_name=SIGNATURE,
          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
      config = converter_api_ext.ConvertToTFLConfig()
      converter_api_ext.run_convert_to_tfl_passes(
          module, passmanager.PassManager(), config)
      return converter_api_ext.export_flatbuffer_to_bytes(module.operation)
    except Exception as e:  # MLIR errors carry the op in their message
      raise ConversionError(f"litert-converter failed: {e}") from e
