"""The edge client as aarch64 code under qemu-aarch64: an emulated Pi.

    python -m benchmarks.edge_aarch64 --export DIR --server URL \\
        --token-file F --images 4 [--data-dir ../shared/data]

Runs the same client (LiteRT head, native coder, HTTP client) twice on a
few holdout images of ../shared/data/imagenet_samples: natively (x86-64,
this interpreter) and as aarch64 code, Debian's arm64 CPython under
qemu-aarch64 with aarch64 wheels and the coder cross-compiled; both talk
to the server at URL. Reports, per image and overall, whether the two
produced the same symbols (fraction of values equal) and the same bytes,
the same predictions, and the stage times of each; the aarch64 times are
labelled "emulated (qemu-aarch64)": qemu translates every instruction, so
they say nothing about a real Pi's speed, only that the code runs there.

The aarch64 root is built once and cached (``--cache``, default
~/.cache/hecsb_jax/aarch64):

  root/       Debian arm64 packages (python3.11 and its libraries) fetched
              with `apt-get download` and unpacked with `dpkg -x` (needs
              `dpkg --add-architecture arm64 && apt-get update`, as root,
              once);
  site-VER/   aarch64 wheels from this machine's pip (`--platform
              manylinux_2_27_aarch64 --only-binary=:all:`): numpy, Pillow,
              ai-edge-litert VER, httpx;
  pkg/        hecsb_jax/__init__.py, coding/ and edge/ from this checkout,
              with hecsb_jax.coding._rc built by aarch64-linux-gnu-gcc
              against the arm64 Python headers (rebuilt every run).

ai-edge-litert 2.3.0 crashes (SIGSEGV) in allocate_tensors under qemu 7.2;
1.4.0 (with numpy 1.26) runs, so `--litert` defaults to 1.4.0.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from hecsb_jax.data import imagenet_folder
from hecsb_jax.edge import client as client_lib

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path.home() / ".cache" / "hecsb_jax" / "aarch64"
LABEL = "emulated (qemu-aarch64)"
# Debian bookworm arm64: the interpreter, its standard library's shared
# libraries, libstdc++ (LiteRT, numpy) and the headers for the extension.
DEBS = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libpython3.11-dev", "libc6", "libgcc-s1", "libstdc++6", "zlib1g",
    "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5",
    "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1",
    "libcrypt1", "libdb5.3", "libnsl2", "libtirpc3", "libgssapi-krb5-2",
    "libk5crypto3", "libkeyutils1", "libkrb5-3", "libkrb5support0",
    "libcom-err2", "libzstd1", "libmd0",
)
# numpy that each LiteRT wheel works with (1.4.0 was built against 1.x).
LITERT_NUMPY = {"1.4.0": "1.26.4", "2.3.0": "2.4.6"}
WHEELS = ("pillow==13.0.0", "httpx==0.28.1")
NATIVE_SOURCES = ("rc_tables.c", "rc_coder.c", "rc_container.c", "py_rc.c")


class SetupError(RuntimeError):
  """A tool or package the emulated device needs is missing (says which)."""


def _run(cmd, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
  result = subprocess.run([str(c) for c in cmd], capture_output=True,
                          text=True, timeout=timeout, check=False, **kwargs)
  if result.returncode != 0:
    raise SetupError(f"{' '.join(map(str, cmd[:4]))} ... failed"
                     f" ({result.returncode}):\n{result.stderr[-2000:]}")
  return result


def missing_tools() -> list[str]:
  """Host tools this needs that are not on PATH."""
  return [t for t in ("qemu-aarch64", "aarch64-linux-gnu-gcc", "dpkg",
                      "apt-get") if shutil.which(t) is None]


def ensure_root(cache: Path) -> Path:
  """The unpacked arm64 Debian root (built once)."""
  root = cache / "root"
  if (root / "usr" / "bin" / "python3.11").is_file() and (
      root / "usr" / "include" / "python3.11" / "Python.h").is_file():
    return root
  if "arm64" not in _run(["dpkg", "--print-foreign-architectures"]).stdout:
    raise SetupError("dpkg has no arm64 architecture: run (as root) `dpkg"
                     " --add-architecture arm64 && apt-get update`")
  debs = cache / "debs"
  debs.mkdir(parents=True, exist_ok=True)
  _run(["apt-get", "download", *(f"{d}:arm64" for d in DEBS)], cwd=debs)
  tmp = cache / "root.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  for deb in sorted(debs.glob("*.deb")):
    _run(["dpkg", "-x", deb, tmp])
  shutil.rmtree(root, ignore_errors=True)
  tmp.rename(root)
  return root


def ensure_site(cache: Path, litert: str) -> Path:
  """aarch64 wheels for ai-edge-litert ``litert`` (installed once)."""
  site = cache / f"site-{litert}"
  if (site / ".complete").is_file():
    return site
  if litert not in LITERT_NUMPY:
    raise SetupError(f"--litert must be one of {sorted(LITERT_NUMPY)}")
  shutil.rmtree(site, ignore_errors=True)
  _run([sys.executable, "-m", "pip", "install", "-q", "--target", site,
        "--python-version", "3.11", "--only-binary=:all:",
        "--platform", "manylinux_2_27_aarch64",
        "--platform", "manylinux_2_17_aarch64",
        "--platform", "manylinux2014_aarch64",
        f"ai-edge-litert=={litert}", f"numpy=={LITERT_NUMPY[litert]}",
        *WHEELS])
  (site / ".complete").write_text("ok\n")
  return site


def build_package(root: Path, dest: Path) -> Path:
  """hecsb_jax's edge subset under ``dest``, the coder cross-compiled."""
  pkg = dest / "pkg"
  for sub in ("coding", "edge"):
    (pkg / "hecsb_jax" / sub).mkdir(parents=True, exist_ok=True)
    for f in (REPO_ROOT / "hecsb_jax" / sub).glob("*.py"):
      shutil.copy2(f, pkg / "hecsb_jax" / sub / f.name)
  shutil.copy2(REPO_ROOT / "hecsb_jax" / "__init__.py", pkg / "hecsb_jax")
  native = REPO_ROOT / "native"
  # Debian's pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>.
  _run(["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-std=c99", "-O3",
        f"-I{native}", f"-I{root}/usr/include/python3.11",
        f"-I{root}/usr/include",
        *(native / s for s in NATIVE_SOURCES), "-o",
        pkg / "hecsb_jax" / "coding" / "_rc.cpython-311-aarch64-linux-gnu.so"])
  return pkg


# Runs under qemu: argv = export, server, token file, out folder, images.
_DRIVER = """
import json, sys, time
import numpy as np
from hecsb_jax.edge import client as client_lib

export, server, token_file, out = sys.argv[1:5]
start = time.perf_counter()
with client_lib.EdgeClient(export, server,
                           client_lib.read_token(token_file)) as c:
  load_ms = (time.perf_counter() - start) * 1e3
  results = []
  for i, image in enumerate(sys.argv[5:]):
    encoded = c.encode(image)
    p = c.predict_encoded(image, encoded)
    np.save(f"{out}/symbols_{i}.npy", encoded.symbols)
    open(f"{out}/data_{i}.bin", "wb").write(encoded.data)
    results.append(p.to_dict())
import platform
json.dump({"machine": platform.machine(), "runtime": c.head.runtime,
           "numpy": np.__version__, "load_ms": load_ms,
           "results": results}, open(f"{out}/results.json", "w"))
"""


def run_emulated(root, site, pkg, export, server, token_file, images,
                 out: Path, timeout_s: float) -> dict:
  """The client under qemu-aarch64; its results, symbols and bytes."""
  out.mkdir(parents=True, exist_ok=True)
  env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{pkg}:{site}",
         "PYTHONNOUSERSITE": "1", "HOME": str(out)}
  start = time.perf_counter()
  _run(["qemu-aarch64", "-L", root, root / "usr" / "bin" / "python3.11",
        "-c", _DRIVER, export, server, token_file, out, *images],
       timeout=timeout_s, env=env, cwd=out)  # not the checkout: "-c" puts
  # the working folder first on sys.path, and its hecsb_jax is x86-64.
  record = json.loads((out / "results.json").read_text())
  record["wall_s"] = time.perf_counter() - start
  record["symbols"] = [np.load(out / f"symbols_{i}.npy")
                       for i in range(len(images))]
  record["data"] = [(out / f"data_{i}.bin").read_bytes()
                    for i in range(len(images))]
  return record


def run_native(export, server, token, images) -> dict:
  """The same client in this (x86-64) interpreter."""
  with client_lib.EdgeClient(export, server, token) as c:
    encoded = [c.encode(image) for image in images]
    results = [c.predict_encoded(i, e).to_dict()
               for i, e in zip(images, encoded)]
  return {"runtime": c.head.runtime, "results": results,
          "symbols": [e.symbols for e in encoded],
          "data": [e.data for e in encoded]}


def compare(native: dict, emulated: dict) -> dict:
  """Symbols, bytes and predictions of the two runs, side by side."""
  rows = []
  for i, (a, b) in enumerate(zip(native["results"], emulated["results"])):
    s_a, s_b = native["symbols"][i], emulated["symbols"][i]
    rows.append({
        "image": Path(a["image"]).name,
        "symbols_equal": float(np.mean(s_a == s_b)),
        "bytes_equal": native["data"][i] == emulated["data"][i],
        "num_bytes": [len(native["data"][i]), len(emulated["data"][i])],
        "class": [a["class"], b["class"]],
        "native_ms": a["timings_ms"], "emulated_ms": b["timings_ms"]})
  values = sum(s.size for s in native["symbols"])
  equal = sum(int((a == b).sum()) for a, b in
              zip(native["symbols"], emulated["symbols"]))
  return {
      "images": len(rows),
      "symbols_equal": equal / max(values, 1),
      "bytes_equal": sum(r["bytes_equal"] for r in rows) / max(len(rows), 1),
      "predictions_equal": sum(r["class"][0] == r["class"][1]
                               for r in rows) / max(len(rows), 1),
      "native_runtime": native["runtime"],
      "emulated_runtime": emulated["runtime"],
      "emulated_machine": emulated["machine"],
      "emulated_numpy": emulated["numpy"],
      "emulated_load_ms": emulated["load_ms"],
      "label": LABEL,
      "rows": rows,
  }


def holdout_images(data_dir: Path, count: int) -> list[Path]:
  """The first ``count`` holdout images of imagenet_samples."""
  examples = imagenet_folder.read_split(data_dir / "imagenet_samples",
                                        "holdout")
  return [e.path for e in examples[:count]]


def report(summary: dict) -> str:
  stages = (*client_lib.STAGES, "total")
  lines = [
      f"{summary['images']} images; symbols equal"
      f" {summary['symbols_equal']:.4f} (fraction of values), bytes equal"
      f" {summary['bytes_equal']:.2f}, predictions equal"
      f" {summary['predictions_equal']:.2f} (fractions of images)",
      f"x86-64: {summary['native_runtime']}; aarch64"
      f" ({summary['emulated_machine']}, {LABEL}):"
      f" {summary['emulated_runtime']}, numpy {summary['emulated_numpy']},"
      f" client start {summary['emulated_load_ms']:.0f} ms",
      "image, bytes, class, ms per stage: " + ", ".join(stages),
  ]
  for r in summary["rows"]:
    for kind, times in (("x86-64", r["native_ms"]),
                        (LABEL, r["emulated_ms"])):
      lines.append(
          f"  {r['image']} {kind}: {r['num_bytes'][0]} B, class"
          f" {r['class'][0 if kind == 'x86-64' else 1]}, "
          + ", ".join(f"{times[s]:.1f}" for s in stages))
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.edge_aarch64",
                              description=__doc__.split("\n")[0])
  p.add_argument("--export", required=True, type=Path)
  p.add_argument("--server", required=True)
  p.add_argument("--token-file", required=True, type=Path)
  p.add_argument("--images", type=int, default=4)
  p.add_argument("--image", action="append", type=Path, default=[],
                 help="use these images instead of the holdout's")
  p.add_argument("--data-dir", type=Path,
                 default=REPO_ROOT.parent / "shared" / "data")
  p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
  p.add_argument("--litert", default="1.4.0", choices=sorted(LITERT_NUMPY))
  p.add_argument("--timeout", type=float, default=1800.0,
                 help="seconds the emulated run may take")
  p.add_argument("--json", type=Path, help="also write the summary here")
  args = p.parse_args(argv)
  try:
    missing = missing_tools()
    if missing:
      raise SetupError(f"missing host tools: {', '.join(missing)} (Debian:"
                       " qemu-user gcc-aarch64-linux-gnu dpkg apt)")
    # Absolute: the emulated client runs in another working folder.
    images = [i.resolve() for i in args.image or holdout_images(
        args.data_dir, args.images)]
    root = ensure_root(args.cache)
    site = ensure_site(args.cache, args.litert)
    token = client_lib.read_token(args.token_file)
    native = run_native(args.export, args.server, token, images)
    with tempfile.TemporaryDirectory() as tmp:
      pkg = build_package(root, Path(tmp))
      emulated = run_emulated(root, site, pkg, args.export.resolve(),
                              args.server, args.token_file.resolve(),
                              images, Path(tmp) / "out", args.timeout)
  except (SetupError, client_lib.ClientError, FileNotFoundError) as e:
    print(f"edge_aarch64: error: {e}", file=sys.stderr)
    return 1
  summary = compare(native, emulated)
  print(report(summary))
  if args.json:
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
