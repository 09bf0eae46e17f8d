"""Pure Flax (nnx) model definitions."""
