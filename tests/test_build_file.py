"""Keeps the Bazel BUILD file in step with the source tree.

Bazel cannot fetch its rules offline here, so nothing builds BUILD; this test
is what stops it from rotting: every file it names exists, and every module,
test, benchmark and native source in the tree is named by some target.
"""

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PY_DIRS = ("hecsb_jax", "experiments", "benchmarks")


def _targets():
  """Parses BUILD (Starlark is a subset of Python syntax) into rule calls."""
  tree = ast.parse((REPO_ROOT / "BUILD").read_text(), filename="BUILD")
  targets = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      kwargs = {kw.arg: kw.value for kw in node.keywords}
      targets.append((node.func.id, kwargs))
  return targets


def _strings(node):
  if node is None:
    return []
  return [
      n.value
      for n in ast.walk(node)
      if isinstance(n, ast.Constant) and isinstance(n.value, str)
  ]


def _listed(kinds, field="srcs"):
  files = set()
  for kind, kwargs in _targets():
    if kind in kinds:
      files.update(_strings(kwargs.get(field)))
  return files


def test_every_listed_file_exists():
  listed = set()
  for field in ("srcs", "hdrs", "data"):
    listed |= {
        f for f in _listed({k for k, _ in _targets()}, field)
        if not f.startswith((":", "@", "//"))
    }
  # A glob() pattern must match something, or it is as stale as a bad name.
  missing = sorted(
      f for f in listed
      if not (any(REPO_ROOT.glob(f)) if "*" in f else (REPO_ROOT / f).exists())
  )
  assert not missing, f"BUILD names files that do not exist: {missing}"


def test_every_python_module_is_listed():
  listed = _listed({"py_library", "py_binary", "py_test"})
  on_disk = {
      str(p.relative_to(REPO_ROOT))
      for d in PY_DIRS
      for p in (REPO_ROOT / d).rglob("*.py")
  }
  unlisted = sorted(on_disk - listed)
  assert not unlisted, f"modules missing from BUILD: {unlisted}"


def test_every_test_has_a_py_test():
  tests = _listed({"py_test"})
  on_disk = {
      str(p.relative_to(REPO_ROOT))
      for p in (REPO_ROOT / "tests").rglob("test_*.py")
  }
  unlisted = sorted(on_disk - tests)
  assert not unlisted, f"tests without a py_test target: {unlisted}"


def test_every_native_source_is_listed():
  native = REPO_ROOT / "native"
  on_disk = {
      str(p.relative_to(REPO_ROOT))
      for p in native.rglob("*")
      if p.suffix in (".c", ".h")
  }
  listed = _listed({"cc_library", "cc_test", "cc_binary"}, "srcs")
  listed |= _listed({"cc_library", "cc_test", "cc_binary"}, "hdrs")
  unlisted = sorted(on_disk - listed)
  assert not unlisted, f"native sources missing from BUILD: {unlisted}"
