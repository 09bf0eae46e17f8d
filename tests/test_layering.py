"""Layering: imports point down, and the edge side runs without JAX.

Two kinds of checks:

  * A static walk of every .py under hecsb_jax/ (with `ast`: module-level
    imports, imports inside functions or under `if`, relative imports, and
    `importlib.import_module("...")` with a literal name) that fails on any
    import of a package from a higher layer of `LAYERS`, naming the file,
    the line and the edge.
  * Fresh interpreters in which importing jax, jaxlib, flax, optax or orbax
    raises ImportError: `hecsb_jax.coding` must still load tables from .npz
    and round-trip a tensor (byte-identical to a golden bitstream), and
    `hecsb_jax.configs.mnist_cs` and `split_rd` must still build their
    configs.
"""

import ast
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hecsb_jax import coding

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "hecsb_jax"
GOLDEN = REPO_ROOT / "tests" / "golden"


@dataclasses.dataclass(frozen=True)
class Layer:
  """Packages at one height.

  Attributes:
    name: what the layer is, for messages.
    packages: dotted names; a module belongs to the package whose name
      prefixes its own ("hecsb_jax", the root, owns only itself).
    peers: whether its packages may import each other (a package may always
      import itself).
  """

  name: str
  packages: tuple[str, ...]
  peers: bool


# Lowest first. A module may import its own package and any package of a
# lower layer (and of its own layer where `peers` is set); everything else
# is an upward edge. Packages that do not exist yet are listed so that the
# rule holds the day they appear; a package found on disk but missing here
# fails the test until it is given a layer.
LAYERS = (
    # hecsb_jax/__init__.py runs before every submodule, coding included:
    # it must import nothing of the package.
    Layer("package root", ("hecsb_jax",), peers=False),
    # What an edge device installs: numpy and the C extension only.
    Layer("coder", ("hecsb_jax.coding",), peers=False),
    # The edge client (LiteRT head, Pillow preprocessing, HTTP), also
    # JAX-free: below the library, so evaluation shares its preprocessing
    # and export writes its manifest type.
    Layer("edge", ("hecsb_jax.edge",), peers=False),
    # Pure library code: models, measurements, entropy model, data, configs.
    Layer(
        "library",
        (
            "hecsb_jax.data",
            "hecsb_jax.entropy",
            "hecsb_jax.cs",
            "hecsb_jax.models",
            "hecsb_jax.configs",
        ),
        peers=True,
    ),
    Layer("training", ("hecsb_jax.train",), peers=False),
    Layer(
        "deployment",
        ("hecsb_jax.export", "hecsb_jax.serve"),
        peers=False,
    ),
    # Command-line entry points; nothing under hecsb_jax/ imports them.
    Layer("entry points", ("experiments", "benchmarks"), peers=True),
)

# Top-level names this test follows; any other import is third-party.
ROOTS = ("hecsb_jax", "experiments", "benchmarks")


def _package_of(module: str) -> str | None:
  """The LAYERS package that owns dotted `module`, or None.

  The root "hecsb_jax" owns only hecsb_jax/__init__.py: a module directly
  under it (hecsb_jax/foo.py) is a package of its own that needs a layer.
  """
  for layer in LAYERS:
    for package in layer.packages:
      if module == package or (
          package != "hecsb_jax" and module.startswith(package + ".")
      ):
        return package
  return None


def _layer_of(package: str) -> int:
  return next(i for i, l in enumerate(LAYERS) if package in l.packages)


def _allowed(importer: str, imported: str) -> bool:
  """Whether package `importer` may import package `imported`."""
  if importer == imported:
    return True
  low, high = _layer_of(imported), _layer_of(importer)
  return low < high or (low == high and LAYERS[low].peers)


def _is_module(dotted: str) -> bool:
  """Whether `dotted` names a module or package in the repository."""
  path = REPO_ROOT.joinpath(*dotted.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool):
  """Yields (line, dotted name) for each import of ROOTS in `source`.

  Args:
    source: Python source of `module`.
    module: its dotted name, e.g. "hecsb_jax.coding.codec".
    is_package: True for an __init__.py (relative imports start there).

  `from a.b import c` yields a.b.c when that is a module, else a.b.
  """
  package = module if is_package else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        parent = ".".join(base + ([node.module] if node.module else []))
      else:
        parent = node.module
      for alias in node.names:
        child = f"{parent}.{alias.name}"
        yield node.lineno, child if _is_module(child) else parent
    elif (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None))
        in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
      yield node.lineno, node.args[0].value


def _violations(files):
  """Upward edges and unplaced packages among `files`, one line each."""
  problems = []
  for path in files:
    rel = path.relative_to(REPO_ROOT)
    is_package = path.name == "__init__.py"
    parts = rel.with_suffix("").parts
    module = ".".join(parts[:-1] if is_package else parts)
    importer = _package_of(module)
    if importer is None:
      problems.append(
          f"{rel}: package of {module} has no layer; add it to LAYERS in"
          " tests/test_layering.py"
      )
      continue
    imports = imported_modules(path.read_text(), module, is_package)
    for line, target in sorted(set(imports)):
      if target.split(".")[0] not in ROOTS:
        continue
      imported = _package_of(target)
      if imported is None:
        problems.append(f"{rel}:{line}: imports {target}, which has no layer")
      elif not _allowed(importer, imported):
        problems.append(
            f"{rel}:{line}: {importer} -> {imported} (imports {target}):"
            f" layer '{LAYERS[_layer_of(importer)].name}' may not import"
            f" layer '{LAYERS[_layer_of(imported)].name}'"
        )
  return problems


def test_layers_name_each_package_once():
  packages = [p for layer in LAYERS for p in layer.packages]
  assert len(packages) == len(set(packages))


def test_imports_point_down_the_layers():
  files = sorted(PACKAGE_DIR.rglob("*.py"))
  assert files, f"no Python files under {PACKAGE_DIR}"
  problems = _violations(files)
  assert not problems, "upward imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "module, source, want",
    [
        (
            "hecsb_jax.cs.csgm",
            "from hecsb_jax.train.trainer import fit",
            ["hecsb_jax.train.trainer"],
        ),
        (
            "hecsb_jax.cs.csgm",
            "from ..train import trainer",
            ["hecsb_jax.train.trainer"],
        ),
        ("hecsb_jax.coding", "from . import codec", ["hecsb_jax.coding.codec"]),
        (
            "hecsb_jax.coding.codec",
            "from .. import entropy",
            ["hecsb_jax.entropy"],
        ),
        (
            "hecsb_jax.models.uae",
            "def f():\n  if True:\n    import experiments.mnist_cs",
            ["experiments.mnist_cs"],
        ),
        (
            "hecsb_jax.entropy",
            "import importlib\nimportlib.import_module('hecsb_jax.train')",
            ["importlib", "hecsb_jax.train"],
        ),
        (
            "hecsb_jax.data.mnist",
            "from hecsb_jax import __version__",
            ["hecsb_jax"],
        ),
    ],
)
def test_walker_sees_every_kind_of_import(module, source, want):
  is_package = module in ("hecsb_jax.coding", "hecsb_jax.entropy")
  got = [name for _, name in imported_modules(source, module, is_package)]
  assert got == want


@pytest.mark.parametrize(
    "importer, imported, allowed",
    [
        ("hecsb_jax.coding", "hecsb_jax", True),
        ("hecsb_jax.coding", "hecsb_jax.entropy", False),
        ("hecsb_jax", "hecsb_jax.coding", False),
        ("hecsb_jax.entropy", "hecsb_jax.coding", True),
        ("hecsb_jax.configs", "hecsb_jax.cs", True),
        ("hecsb_jax.cs", "hecsb_jax.train", False),
        ("hecsb_jax.models", "hecsb_jax.serve", False),
        ("hecsb_jax.data", "hecsb_jax.edge", True),
        ("hecsb_jax.edge", "hecsb_jax.data", False),
        ("hecsb_jax.edge", "hecsb_jax.coding", True),
        ("hecsb_jax.export", "hecsb_jax.edge", True),
        ("hecsb_jax.train", "hecsb_jax.models", True),
        ("hecsb_jax.train", "hecsb_jax.export", False),
        ("hecsb_jax.train", "experiments", False),
        ("hecsb_jax.serve", "benchmarks", False),
    ],
)
def test_rule_table(importer, imported, allowed):
  assert _allowed(importer, imported) == allowed


# ---------------------------------------------------------------------------
# Without JAX
# ---------------------------------------------------------------------------

# Prepended to each child script: importing any of these (or a submodule)
# raises ImportError, as on a device where they are not installed.
_BLOCK_JAX = textwrap.dedent("""
    import importlib.abc
    import sys

    BLOCKED = ("jax", "jaxlib", "flax", "optax", "orbax")

    class BlockJax(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ImportError(f"blocked in this test: {name} (no JAX here)")
        return None

    sys.meta_path.insert(0, BlockJax())
    """)


def _run_without_jax(script: str, *args: str) -> str:
  """Runs `script` in a fresh interpreter with JAX blocked; returns stdout."""
  result = subprocess.run(
      [sys.executable, "-c", _BLOCK_JAX + textwrap.dedent(script), *args],
      capture_output=True,
      check=False,
      text=True,
      timeout=120,
      cwd=str(REPO_ROOT),
  )
  assert (
      result.returncode == 0
  ), f"exit {result.returncode} with JAX blocked:\n{result.stderr[-3000:]}"
  return result.stdout


def test_blocker_blocks_jax():
  out = _run_without_jax("""
      try:
        import jax.numpy
      except ImportError as e:
        print("blocked:", e)
      """)
  assert "blocked: blocked in this test: jax" in out


def test_coding_round_trips_with_jax_blocked(tmp_path):
  name = "latent_1x4x4x16_p16"
  with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
    tables = coding.CodingTables(
        z["cdf"], z["cdf_length"], z["offset"], int(z["precision"])
    )
    np.save(tmp_path / "symbols.npy", z["symbols"])
  tables.save_npz(tmp_path / "tables.npz")
  out = _run_without_jax(
      """
      import sys
      import numpy as np
      from hecsb_jax import coding

      tables = coding.load_tables(sys.argv[1])
      symbols = np.load(sys.argv[2])
      data = coding.compress(symbols, tables)
      assert data == open(sys.argv[3], "rb").read(), "bytes differ from golden"
      back = coding.decompress(data, tables)
      assert back.dtype == np.int32 and np.array_equal(back, symbols)
      loaded = sorted(
          m for m in sys.modules
          if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax")
          or (m.startswith("hecsb_jax.") and not m.startswith("hecsb_jax.coding"))
      )
      print("round trip ok", len(data), "extra modules:", loaded)
      """,
      str(tmp_path / "tables.npz"),
      str(tmp_path / "symbols.npy"),
      str(GOLDEN / f"{name}.hjrc"),
  )
  assert "round trip ok" in out and "extra modules: []" in out, out


def test_configs_load_with_jax_blocked():
  out = _run_without_jax("""
      from hecsb_jax.configs import mnist_cs, split_rd

      full, quick = mnist_cs.get_config(), mnist_cs.get_config("quick")
      assert quick.eval_images < full.eval_images
      for arg in (None, "quick", "paper"):
        split_rd.get_config(arg)
      print("configs ok", list(full.measurements))
      """)
  assert "configs ok" in out, out
