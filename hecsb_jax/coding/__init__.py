"""Entropy coding of integer tensors into bytes, and back.

    tables = load_tables("tables.npz")           # CodingTables, int32
    compress(symbols [..., C] int32, tables) -> bytes
    decompress(bytes, tables) -> symbols [..., C] int32

Backed by the native rANS coder in native/ (extension `_rc`). Imports numpy
and the extension only, never JAX and nothing else from hecsb_jax, so the
edge side can install and use it alone (tests/test_layering.py checks both).
"""

from hecsb_jax.coding.codec import DecodeError
from hecsb_jax.coding.codec import compress
from hecsb_jax.coding.codec import decompress
from hecsb_jax.coding.container import FORMAT_VERSION
from hecsb_jax.coding.container import Header
from hecsb_jax.coding.container import model_id
from hecsb_jax.coding.container import read_header
from hecsb_jax.coding.tables import CodingTables
from hecsb_jax.coding.tables import load_tables

__all__ = [
    "CodingTables",
    "DecodeError",
    "FORMAT_VERSION",
    "Header",
    "compress",
    "decompress",
    "load_tables",
    "model_id",
    "read_header",
]
