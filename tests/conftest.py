"""Shared test fixtures.

Real data lives in ``../shared/data`` beside the checkout (or wherever
``HECSB_DATA_DIR`` points). On a user's checkout it may be absent, and tests
that need it skip with the reason. CI sets ``HECSB_REQUIRE_DATA=1``, which
turns those skips into failures, so a missing data folder cannot pass quietly.
"""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(
    os.environ.get("HECSB_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
)
REQUIRE_DATA = os.environ.get("HECSB_REQUIRE_DATA", "") == "1"


def _require(path: Path, what: str) -> Path:
  if path.exists():
    return path
  reason = (
      f"{what} not found at {path} (set HECSB_DATA_DIR to the folder that"
      " holds mnist/, omniglot/, ...)"
  )
  if REQUIRE_DATA:
    pytest.fail(f"HECSB_REQUIRE_DATA=1 but {reason}")
  pytest.skip(reason)


@pytest.fixture
def shared_data():
  """Returns a function: subpath -> Path under the shared data folder.

  Skips (or fails under HECSB_REQUIRE_DATA=1) when the path is absent.
  """
  return lambda sub: _require(DATA_DIR / sub, f"shared data '{sub}'")


@pytest.fixture(scope="session")
def mnist_dir():
  return _require(DATA_DIR / "mnist", "MNIST IDX folder")


@pytest.fixture(scope="session")
def omniglot_dir():
  return _require(DATA_DIR / "omniglot", "Omniglot npz folder")
