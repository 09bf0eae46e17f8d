"""Dataset loaders: local files (IDX, npz) and tensorflow-datasets."""
