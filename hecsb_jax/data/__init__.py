"""Dataset loaders: local files (IDX, npz) and tensorflow-datasets.

    ds = hecsb_jax.data.load_dataset("mnist", "../shared/data")
    ds.train.images  # [50000, 784] float32 in [0, 1]
"""

# Importing the loader modules registers them with `load_dataset`.
from hecsb_jax.data import mnist
from hecsb_jax.data import omniglot
from hecsb_jax.data.dataset import IMAGE_SHAPE
from hecsb_jax.data.dataset import dataset_names
from hecsb_jax.data.dataset import ImageDataset
from hecsb_jax.data.dataset import load_dataset
from hecsb_jax.data.dataset import Split
from hecsb_jax.data.errors import DataFormatError

__all__ = [
    "DataFormatError",
    "IMAGE_SHAPE",
    "ImageDataset",
    "Split",
    "dataset_names",
    "load_dataset",
    "mnist",
    "omniglot",
]
