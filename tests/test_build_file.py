"""Keeps the Bazel BUILD file in step with the source tree.

`bazel test //...` (through ../shared/bazel/bazel-offline; .ci/run runs it
where Bazel is installed) only builds what BUILD names, so a new module or
test without a target would go unnoticed there. This test, which needs no
Bazel, stops that: every file BUILD names exists, and every module, test,
benchmark and native source in the tree is named by some target.
"""

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PY_DIRS = ("hecsb_jax", "experiments", "benchmarks")
# pytest_test (bazel/pytest.bzl) is a py_test that runs its file under pytest.
TEST_RULES = {"py_test", "pytest_test"}
PY_RULES = {"py_library", "py_binary"} | TEST_RULES
CC_RULES = {"cc_library", "cc_test", "cc_binary"}


def _parse():
  """Parses BUILD (Starlark is a subset of Python syntax)."""
  return ast.parse((REPO_ROOT / "BUILD").read_text(), filename="BUILD")


def _variables():
  """Top-level `NAME = <expr>` assignments (e.g. a list of sources)."""
  return {
      node.targets[0].id: node.value
      for node in _parse().body
      if isinstance(node, ast.Assign)
      and len(node.targets) == 1
      and isinstance(node.targets[0], ast.Name)
  }


def _targets():
  """The rule calls of BUILD as (rule, {attribute: expression})."""
  targets = []
  for node in ast.walk(_parse()):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      kwargs = {kw.arg: kw.value for kw in node.keywords}
      targets.append((node.func.id, kwargs))
  return targets


def _strings(node, variables):
  """String constants in an expression, through top-level variables."""
  if node is None:
    return []
  found = []
  for n in ast.walk(node):
    if isinstance(n, ast.Constant) and isinstance(n.value, str):
      found.append(n.value)
    elif isinstance(n, ast.Name) and n.id in variables:
      found += _strings(variables[n.id], variables)
  return found


def _listed(kinds, field="srcs"):
  variables = _variables()
  files = set()
  for kind, kwargs in _targets():
    if kind in kinds:
      files.update(_strings(kwargs.get(field), variables))
  return files


def test_every_listed_file_exists():
  listed = set()
  for field in ("srcs", "hdrs", "data"):
    listed |= {
        f
        for f in _listed({k for k, _ in _targets()}, field)
        if not f.startswith((":", "@", "//"))
    }
  # A glob() pattern must match something, or it is as stale as a bad name.
  missing = sorted(
      f
      for f in listed
      if not (any(REPO_ROOT.glob(f)) if "*" in f else (REPO_ROOT / f).exists())
  )
  assert not missing, f"BUILD names files that do not exist: {missing}"


def test_every_python_module_is_listed():
  listed = _listed(PY_RULES)
  on_disk = {
      str(p.relative_to(REPO_ROOT))
      for d in PY_DIRS
      for p in (REPO_ROOT / d).rglob("*.py")
  }
  unlisted = sorted(on_disk - listed)
  assert not unlisted, f"modules missing from BUILD: {unlisted}"


def test_every_test_has_a_test_target():
  tests = _listed(TEST_RULES)
  on_disk = {
      str(p.relative_to(REPO_ROOT))
      for p in (REPO_ROOT / "tests").rglob("test_*.py")
  }
  unlisted = sorted(on_disk - tests)
  assert not unlisted, f"tests without a pytest_test target: {unlisted}"


def test_pytest_modules_run_under_pytest():
  # A plain py_test would run the module as a script: it defines the test
  # functions, calls none of them and passes.
  bare = sorted(
      f for f in _listed({"py_test"}) if Path(f).name.startswith("test_")
  )
  assert not bare, f"pytest modules in a plain py_test, not pytest_test: {bare}"


def test_every_native_source_is_listed():
  native = REPO_ROOT / "native"
  on_disk = {
      str(p.relative_to(REPO_ROOT))
      for p in native.rglob("*")
      if p.suffix in (".c", ".h")
  }
  listed = _listed(CC_RULES, "srcs") | _listed(CC_RULES, "hdrs")
  unlisted = sorted(on_disk - listed)
  assert not unlisted, f"native sources missing from BUILD: {unlisted}"
