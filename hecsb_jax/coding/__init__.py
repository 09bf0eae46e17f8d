"""Entropy coding of integer tensors into bytes, and back.

    compress(symbols [..., C] int32, tables) -> bytes
    decompress(bytes, tables) -> symbols [..., C] int32

Backed by the native rANS coder in native/ (extension `_rc`). Imports numpy
and the extension only, never JAX, so the edge side can use it alone.
"""

from hecsb_jax.coding.codec import DecodeError
from hecsb_jax.coding.codec import compress
from hecsb_jax.coding.codec import decompress
from hecsb_jax.coding.container import FORMAT_VERSION
from hecsb_jax.coding.container import Header
from hecsb_jax.coding.container import model_id
from hecsb_jax.coding.container import read_header

__all__ = [
    "DecodeError",
    "FORMAT_VERSION",
    "Header",
    "compress",
    "decompress",
    "model_id",
    "read_header",
]
