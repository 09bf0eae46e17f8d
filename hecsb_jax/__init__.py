"""hecsb_jax: split computing with a compressed-sensing bottleneck (HECS-B).

Importing this package is cheap and has no side effects: it does not import
JAX, so the edge-side piece, ``hecsb_jax.coding`` (the coding tables' type
and npz loader, compress / decompress), works on a device that has only numpy
and the C extension installed.
"""

__version__ = "0.1.0"
