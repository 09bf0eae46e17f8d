"""hecsb_jax: split computing with a compressed-sensing bottleneck (HECS-B).

Importing this package is cheap and has no side effects: it does not import
JAX, so the edge-side pieces (``hecsb_jax.coding``, ``hecsb_jax.entropy.tables``)
work on a device that has only numpy installed.
"""

__version__ = "0.1.0"
