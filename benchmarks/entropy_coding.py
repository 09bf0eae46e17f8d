"""Entropy coding benchmark: ours vs constriction vs tensorflow-compression.

    python -m benchmarks.entropy_coding            # 10^6 symbols + one image
    python -m benchmarks.entropy_coding --quick    # 10^5 symbols, fewer reps
    python -m benchmarks.entropy_coding --setup-tfc-venv   # + the tfc column

For the same symbols and the same integer tables, in one run, it prints the
encode and decode throughput (million symbols per second, best of several
repeats, wall clock) and the bits per symbol of

  1. ours: `hecsb_jax.coding.compress` / `decompress` (container included);
  2. constriction 0.5.0's range coder (`constriction.stream.queue`);
  3. tensorflow-compression 2.14.1's range coder
     (`tfc.create_range_encoder` / `entropy_encode_channel` ...), run in its
     own virtual environment (TF 2.14 needs numpy 1.26), by default
     ~/.cache/hecsb_jax/tfc-venv (`--tfc-venv`). The script never creates it
     unasked: with `--setup-tfc-venv` it makes the venv and pip-installs
     TFC_REQUIREMENTS there (about 590 MB downloaded, 1.9 GB on disk, several
     minutes, once); later runs reuse it without the flag. Without it, or if
     it cannot be made, the tfc row is skipped with a one-line reason.

Workload. Tables come from a learned-like latent: C channels, each a
discretized Laplace with its own scale (log-uniform, most channels narrow,
a few wide), turned into 16-bit tables by `tables_from_pmf` with the same
common window and escape bin that `build_tables` produces. Symbols are drawn
from those integer tables (in-range bins only, so every coder codes the
same bins), laid out [rows, C], channels last. The ideal is
−Σ log2(f / 2^16) under those tables (`hecsb_jax.entropy.rate`).

How each reference is used (the fastest honest way through its Python API):
  * constriction: one `Categorical(freq / 2^16, perfect=False)` model per
    channel, built once before timing from the same integer frequencies
    (escape bin included); the symbols are grouped by channel and each
    channel's block is coded with one `encode(block, model)` call, since
    a per-symbol model family would need a [N, K] float array. Grouping
    changes the order, not the content: for static models the code length
    is a sum over symbols and does not depend on order. The grouping and
    the offset subtraction are inside the timed region. constriction
    re-quantizes to its own 24-bit probabilities, hence a tiny size change.
  * tfc: one handle (a single stream) over the [rows, C] array with the
    lookup [C, 1 + L] = (−precision, padded CDF row): the identical CDF,
    and the negative precision turns on its overflow (escape) mode, the
    counterpart of our escape bin. Encode/decode run inside tf.function.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from hecsb_jax import coding
from hecsb_jax.entropy import rate
from hecsb_jax.entropy import tables_from_pmf

PRECISION = 16
TAIL_MASS = 2**-8
TFC_REQUIREMENTS = (
    "tensorflow==2.14.1",
    "tensorflow-compression==2.14.1",
    "numpy==1.26.*",
)
DEFAULT_TFC_VENV = Path.home() / ".cache" / "hecsb_jax" / "tfc-venv"
# Measured for Python 3.11 on x86-64 Linux: the wheels of TFC_REQUIREMENTS
# and their dependencies, and the finished venv.
TFC_DOWNLOAD_MB = 590
TFC_DISK_MB = 1900


# ---------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------


def laplace_tables(num_channels: int, seed: int) -> coding.CodingTables:
  """16-bit tables of discretized Laplace densities with per-channel scales.

  Args:
    num_channels: C.
    seed: for the scales.

  Returns:
    CodingTables, the same window layout as `build_tables` (common K,
    per-channel offset at the lower end of the support).
  """
  rs = np.random.default_rng(seed)
  scales = np.exp(rs.uniform(np.log(0.1), np.log(8.0), num_channels))
  # Support holding all but TAIL_MASS: P(|Y| > t) = exp(-t / b).
  half = np.ceil(scales * np.log(1.0 / TAIL_MASS) - 0.5).astype(np.int64)
  lo = -half
  num_symbols = int(np.max(2 * half + 1))
  k = lo[:, None] + np.arange(num_symbols)[None, :]

  def cdf(x):
    half_tail = 0.5 * np.exp(-np.abs(x) / scales[:, None])
    return np.where(x < 0, half_tail, 1.0 - half_tail)

  pmf = cdf(k + 0.5) - cdf(k - 0.5)
  return tables_from_pmf(pmf, lo.astype(np.int32), PRECISION)


def draw_symbols(
    tables: coding.CodingTables, rows: int, seed: int
) -> np.ndarray:
  """[rows, C] int32 symbols drawn from the integer tables, escapes excluded."""
  rs = np.random.default_rng(seed)
  num_channels = tables.cdf.shape[0]
  out = np.empty((rows, num_channels), np.int32)
  for c in range(num_channels):
    row = tables.cdf[c, : tables.cdf_length[c]].astype(np.int64)
    top = row[-2]  # start of the escape bin: draw only in-range bins
    slot = rs.integers(0, top, rows)
    out[:, c] = np.searchsorted(row, slot, side="right") - 1 + tables.offset[c]
  return out


# ---------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------


def best_time(fn, repeats: int) -> tuple[float, object]:
  """Best wall-clock seconds of `repeats` calls of fn() and its last result."""
  best, result = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return best, result


def run_ours(symbols, tables, repeats):
  enc_s, data = best_time(lambda: coding.compress(symbols, tables), repeats)
  dec_s, back = best_time(lambda: coding.decompress(data, tables), repeats)
  if not np.array_equal(back, symbols):
    raise AssertionError("our coder did not round-trip")
  return {
      "encode_s": enc_s,
      "decode_s": dec_s,
      "num_bytes": len(data),
      "header_bytes": coding.read_header(data).header_size,
  }


def run_constriction(symbols, tables, repeats):
  import constriction  # dev dependency

  model_cls = constriction.stream.model.Categorical
  queue = constriction.stream.queue
  num_channels = symbols.shape[-1]
  total = float(1 << tables.precision)
  start = time.perf_counter()
  models = [
      model_cls(
          np.diff(tables.cdf[c, : tables.cdf_length[c]]) / total,
          perfect=False,
      )
      for c in range(num_channels)
  ]
  build_s = time.perf_counter() - start
  offset = tables.offset.astype(np.int32)

  def encode():
    by_channel = np.ascontiguousarray((symbols - offset).T)  # [C, rows]
    encoder = queue.RangeEncoder()
    for c in range(num_channels):
      encoder.encode(by_channel[c], models[c])
    return encoder.get_compressed()

  def decode(words):
    decoder = queue.RangeDecoder(words)
    rows = symbols.shape[0]
    by_channel = np.stack([decoder.decode(models[c], rows)
                           for c in range(num_channels)])
    return by_channel.T + offset

  enc_s, words = best_time(encode, repeats)
  dec_s, back = best_time(lambda: decode(words), repeats)
  if not np.array_equal(back, symbols):
    raise AssertionError("constriction did not round-trip")
  return {
      "encode_s": enc_s,
      "decode_s": dec_s,
      "num_bytes": 4 * len(words),
      "model_build_s": build_s,
  }


# ---------------------------------------------------------------------------
# tensorflow-compression, in its own virtual environment
# ---------------------------------------------------------------------------

_TFC_CHILD = textwrap.dedent('''
    """Runs tfc's range coder on workloads from .npz files; prints JSON."""
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tensorflow_compression as tfc

    tf.config.set_visible_devices([], "GPU")

    def best(fn, repeats):
      best_s, out = float("inf"), None
      for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best_s = min(best_s, time.perf_counter() - start)
      return best_s, out

    results = {}
    for path in sys.argv[1:]:
      w = np.load(path)
      cdf, cdf_length, offset = w["cdf"], w["cdf_length"], w["offset"]
      precision, repeats = int(w["precision"]), int(w["repeats"])
      num_channels, width = cdf.shape
      top = 1 << precision
      lookup = np.full((num_channels, width + 1), top, np.int32)
      lookup[:, 0] = -precision  # negative: overflow (escape) mode on
      for c in range(num_channels):
        lookup[c, 1 : 1 + cdf_length[c]] = cdf[c, : cdf_length[c]]
      lookup = tf.constant(lookup)
      symbols = w["symbols"]
      index = tf.constant(symbols - offset)  # bin indices, [rows, C]
      shape = tf.constant(symbols.shape, tf.int32)

      @tf.function
      def encode(index):
        handle = tfc.create_range_encoder([], lookup)
        handle = tfc.entropy_encode_channel(handle, index)
        return tfc.entropy_encode_finalize(handle)

      @tf.function
      def decode(encoded):
        handle = tfc.create_range_decoder(encoded, lookup)
        handle, out = tfc.entropy_decode_channel(handle, shape, tf.int32)
        ok = tfc.entropy_decode_finalize(handle)
        return out, ok

      decode(encode(index))  # trace both once, outside the timing
      enc_s, encoded = best(lambda: encode(index).numpy(), repeats)
      encoded_t = tf.constant(encoded)
      dec_s, (out, ok) = best(
          lambda: [t.numpy() for t in decode(encoded_t)], repeats)
      if not (ok and np.array_equal(out + offset, symbols)):
        raise SystemExit("tfc did not round-trip " + path)
      results[os.path.basename(path)] = {
          "encode_s": enc_s, "decode_s": dec_s, "num_bytes": len(encoded)}
    print("TFC_RESULT " + json.dumps(results))
''')


def _tfc_python(venv: Path) -> Path:
  return venv / "bin" / "python"


def tfc_venv_ready(venv: Path) -> bool:
  """Whether `venv` holds a finished tfc environment for TFC_REQUIREMENTS."""
  marker = venv / ".hecsb_ready"
  return marker.exists() and marker.read_text() == "\n".join(TFC_REQUIREMENTS)


def tfc_setup_hint(venv: Path) -> str:
  """One line: what `--setup-tfc-venv` would do."""
  return (
      f"--setup-tfc-venv would create a venv at {venv} and pip install"
      f" {' '.join(TFC_REQUIREMENTS)} (about {TFC_DOWNLOAD_MB} MB"
      f" downloaded, {TFC_DISK_MB} MB on disk)"
  )


def setup_tfc_venv(venv: Path, base_python: str) -> tuple[Path | None, str]:
  """Creates (or remakes) the tfc virtual environment; asked for by a flag.

  Returns:
    (python executable or None, a message saying what happened).
  """
  print(f"[tfc] creating {venv} with {' '.join(TFC_REQUIREMENTS)} "
        f"(about {TFC_DOWNLOAD_MB} MB to download, several minutes, once)",
        flush=True)
  try:
    subprocess.run([base_python, "-m", "venv", "--clear", str(venv)],
                   check=True, capture_output=True, text=True, timeout=300)
    subprocess.run(
        [str(_tfc_python(venv)), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", *TFC_REQUIREMENTS],
        check=True, capture_output=True, text=True, timeout=1800,
    )
    subprocess.run(
        [str(_tfc_python(venv)), "-c", "import tensorflow_compression"],
        check=True, capture_output=True, text=True, timeout=300,
    )
  except (subprocess.CalledProcessError, subprocess.TimeoutExpired,
          OSError) as e:
    detail = getattr(e, "stderr", None) or str(e)
    tail = "\n".join(str(detail).strip().splitlines()[-5:])
    return None, f"could not build the tfc environment at {venv}: {tail}"
  (venv / ".hecsb_ready").write_text("\n".join(TFC_REQUIREMENTS))
  return _tfc_python(venv), f"created {venv}"


def tfc_python(args) -> tuple[Path | None, str]:
  """The tfc interpreter to use (or None) and a one-line note on why."""
  if args.no_tfc:
    return None, "skipped (--no-tfc)"
  if tfc_venv_ready(args.tfc_venv):
    return _tfc_python(args.tfc_venv), f"reusing {args.tfc_venv}"
  if args.setup_tfc_venv:
    return setup_tfc_venv(args.tfc_venv, args.tfc_python)
  return None, f"skipped: no tfc environment; {tfc_setup_hint(args.tfc_venv)}"


def run_tfc(workloads, python: Path) -> dict:
  """Runs the tfc child on every workload; returns {name: result}."""
  with tempfile.TemporaryDirectory() as tmp:
    script = Path(tmp) / "tfc_child.py"
    script.write_text(_TFC_CHILD)
    paths = []
    for name, (symbols, tables, repeats) in workloads.items():
      path = Path(tmp) / f"{name}.npz"
      np.savez(path, symbols=symbols, cdf=tables.cdf,
               cdf_length=tables.cdf_length, offset=tables.offset,
               precision=tables.precision, repeats=repeats)
      paths.append(str(path))
    proc = subprocess.run([str(python), str(script), *paths],
                          capture_output=True, text=True, timeout=1800)
  for line in proc.stdout.splitlines():
    if line.startswith("TFC_RESULT "):
      raw = json.loads(line[len("TFC_RESULT "):])
      return {Path(k).stem: v for k, v in raw.items()}
  raise RuntimeError(
      f"tfc child failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
  )


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def print_table(name, symbols, tables, results):
  n = symbols.size
  ideal = rate.ideal_bits(symbols, tables)
  print(f"\n== {name}: {n} symbols, shape {list(symbols.shape)}, "
        f"{tables.precision}-bit tables (L={tables.cdf.shape[1]}) ==")
  print(f"ideal -sum log2 p under the tables: {ideal / n:.5f} bits/symbol "
        f"= {ideal / 8:.1f} bytes")
  header = (f"{'coder':<34}| {'encode Msym/s':>13} | {'decode Msym/s':>13} |"
            f" {'bits/symbol':>11} | {'bytes':>9} | {'vs ideal':>9}")
  print(header)
  print("-" * len(header))
  for coder, r in results.items():
    if r is None:
      print(f"{coder:<34}| {'skipped':>13} |")
      continue
    bits = 8 * r["num_bytes"]
    print(f"{coder:<34}| {n / r['encode_s'] / 1e6:13.2f} |"
          f" {n / r['decode_s'] / 1e6:13.2f} | {bits / n:11.5f} |"
          f" {r['num_bytes']:9d} | {100 * (bits / ideal - 1):+8.3f}%")
  ours = results["ours"]
  payload_bits = 8 * (ours["num_bytes"] - ours["header_bytes"])
  print(f"ours includes a {ours['header_bytes']}-byte container header"
        " (magic, version, model id, shape; the references store none);"
        f" payload alone: {payload_bits / n:.5f} bits/symbol,"
        f" {100 * (payload_bits / ideal - 1):+.3f}% vs ideal")
  for coder, r in results.items():
    if coder == "ours" or r is None:
      continue
    print(f"ours / {coder}: encode speed"
          f" {r['encode_s'] / ours['encode_s']:.2f}x,"
          f" decode speed {r['decode_s'] / ours['decode_s']:.2f}x,"
          f" size {ours['num_bytes'] / r['num_bytes']:.5f}x")
  if results.get("constriction") is not None:
    print(f"(constriction model construction, untimed above: "
          f"{results['constriction']['model_build_s'] * 1e3:.1f} ms)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="10^5 symbols and fewer repeats")
  parser.add_argument("--num-symbols", type=int, default=None)
  parser.add_argument("--channels", type=int, default=192)
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tfc-venv", type=Path, default=DEFAULT_TFC_VENV,
                      help="where the tensorflow-compression venv lives")
  parser.add_argument(
      "--setup-tfc-venv", action="store_true",
      help=f"create the tfc venv if it is missing or outdated: pip install"
      f" {' '.join(TFC_REQUIREMENTS)} into --tfc-venv (about"
      f" {TFC_DOWNLOAD_MB} MB downloaded, {TFC_DISK_MB} MB on disk)")
  parser.add_argument("--tfc-python", default=sys.executable,
                      help="interpreter that creates the tfc venv (3.9-3.11)")
  parser.add_argument("--no-tfc", action="store_true",
                      help="skip tfc even if its venv exists")
  args = parser.parse_args(argv)

  num_symbols = args.num_symbols or (10**5 if args.quick else 10**6)
  repeats = args.repeats or (3 if args.quick else 7)
  tables = laplace_tables(args.channels, args.seed)
  rows_big = -(-num_symbols // args.channels)
  rows_image = max(1, round(3000 / args.channels))
  workloads = {
      "latents": (draw_symbols(tables, rows_big, args.seed + 1), tables,
                  repeats),
      # One image's latent: e.g. [4 * 4, 192]; many repeats, it is tiny.
      "one_image": (draw_symbols(tables, rows_image, args.seed + 2), tables,
                    20 * repeats),
  }

  tfc_results = {}
  python, tfc_note = tfc_python(args)
  if python is not None:
    try:
      tfc_results = run_tfc(workloads, python)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
      tfc_note = f"tfc run failed: {e}"
  print(f"[tfc] {tfc_note}")

  for name, (symbols, tables, reps) in workloads.items():
    results = {
        "ours": run_ours(symbols, tables, reps),
        "constriction": run_constriction(symbols, tables, reps),
        "tfc": tfc_results.get(name),
    }
    print_table(name, symbols, tables, results)


if __name__ == "__main__":
  main()
