"""Entropy model: factorized prior, bottleneck and integer coding tables.

Importing this package does not import JAX: `tables_from_pmf` (numpy only,
tables.py) is loaded eagerly, and the JAX pieces (`FactorizedPrior`,
`EntropyBottleneck`, `build_tables`, `round_st`) are imported on first
access through the module-level `__getattr__` below. The table format
(`CodingTables`, its validation and .npz I/O) belongs to `hecsb_jax.coding`,
which this package builds on; `CodingTables` is re-exported here so older
imports keep working.
"""

import importlib
from typing import Any

from hecsb_jax.coding.tables import CodingTables
from hecsb_jax.entropy.tables import tables_from_pmf

# Public name -> submodule that defines it (imported on first access).
_LAZY = {
    "FactorizedPrior": "prior",
    "EntropyBottleneck": "bottleneck",
    "build_tables": "bottleneck",
    "round_st": "bottleneck",
}

__all__ = ["CodingTables", "tables_from_pmf", *_LAZY]


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this hook
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
