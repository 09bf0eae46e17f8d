"""The inference server: entropy-coded symbols over HTTP -> a class.

    python -m hecsb_jax.serve runs/split_rd_v2/ckpt/hecsb_beta0.0003 \\
        --token-file token.txt --port 8000

`app.create_app(model, token, ...)` builds the Starlette app (tests and
benchmarks run it in-process); `__main__` loads the model and runs it
under uvicorn. The HTTP contract is in docs/serve.md.
"""
