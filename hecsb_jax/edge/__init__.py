"""JAX-free edge side: what a device runs (the exported head, the coder,
the HTTP client). numpy, the LiteRT interpreter and hecsb_jax.coding only;
nothing here imports jax, flax, optax or orbax (tests/test_layering.py).
"""
