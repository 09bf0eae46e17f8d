"""Export of the edge head of a trained split model (its own command,
never the tail of training):

    python -m hecsb_jax.export runs/split_rd_v2/ckpt/hecsb_beta0.0003 \\
        --out runs/export/hecsb_beta0.0003

writes head.stablehlo (`jax.export`), head.tflite (litert-converter),
tables.npz and manifest.json (hecsb_jax/edge/manifest.py); with --int8
also an int8-quantized model of its own in DIR/int8. Modules: `head` (the
function), `stablehlo`, `tflite` (the two artifacts), `folder` (the
export folder), `quantize` (int8 .tflite), `symbol_tables` (tables from
observed symbols), `int8` (the int8 folder).
"""
