"""Errors raised by the dataset loaders."""


class DataFormatError(ValueError):
  """A data file exists but is not what the loader expects.

  Raised for a wrong magic number, wrong shape or dtype, missing npz keys, or a
  truncated or corrupt compressed file. The message names the path and what
  was expected there. A missing file raises `FileNotFoundError` instead.
  """
