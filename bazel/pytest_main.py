"""Runs the test files named on the command line under pytest.

The main of every pytest_test (bazel/pytest.bzl). Bazel runs it from the
test's runfiles tree with the files' runfiles paths as arguments; the exit
status is pytest's. Honors Bazel's XML_OUTPUT_FILE (JUnit report) and
TESTBRIDGE_TEST_ONLY (`bazel test --test_filter=EXPR`, passed to -k) and
HECSB_PYTEST_MARK (`bazel test --test_env=HECSB_PYTEST_MARK="not slow"`,
passed to -m: CI runs the slow end-to-end tests once, under plain pytest,
and here only the rest; a file whose tests are all deselected passes).
"""

import os
import sys

import pytest


def main(argv):
  sys.dont_write_bytecode = True  # runfiles are not ours to write into
  args = ["-q", "-p", "no:cacheprovider"]
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  if os.environ.get("TESTBRIDGE_TEST_ONLY"):
    args += ["-k", os.environ["TESTBRIDGE_TEST_ONLY"]]
  mark = os.environ.get("HECSB_PYTEST_MARK")
  if mark:
    args += ["-m", mark]
  status = pytest.main(args + argv)
  if mark and status == pytest.ExitCode.NO_TESTS_COLLECTED:
    return 0  # every test of the file is deselected by the mark
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
