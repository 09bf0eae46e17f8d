"""ml_collections configs, one module per experiment family."""
