"""The compute side of the latency experiment: edge and server times and
the payloads, per trained model and per image-codec setting.

One image at a time (batch 1), on whatever threads the caller allows
(`experiments.latency` pins itself to one core before JAX starts). Each
function is compiled once before timing; a time is the best of
``repeats`` calls (on a shared machine every disturbance makes a call
slower, never faster), and `_row` says how images are combined.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
import platform
import re
import time

from flax import nnx
import jax
import numpy as np
from PIL import Image

from experiments import split_rd_eval
from experiments import split_rd_methods as methods
from hecsb_jax.configs import split_rd as split_rd_config
from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.data import pretrained
from hecsb_jax.train import saved_model

EDGE_JAX = ("the model's edge function as jitted JAX + its coder"
            " (coding.compress); Pillow's encode for JPEG/WebP/PNG")
EDGE_LITERT = ("HECS-B: the exported head.tflite (python -m hecsb_jax.export)"
               " under LiteRT with num_threads=1 + coding.compress on its"
               " symbols; other learned methods: jitted JAX + coder;"
               " JPEG/WebP/PNG: Pillow's encode")
ORDER = split_rd_config.METHODS


def machine() -> dict:
  """What the times were measured on."""
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  load = round(os.getloadavg()[0], 2)
  nice = os.nice(0)
  # Measured, not assumed: how busy the machine was and this process's
  # priority (a shared machine slows every time; compare ratios).
  return {"cpu": cpu, "cores": os.cpu_count(), "threads_used": 1,
          "load_avg_1min": load, "nice": nice,
          "note": f"1-min load average {load} at the start, this process"
                  f" at nice {nice}"}


def best_ms(fn, repeats: int) -> tuple[float, object]:
  """Best wall ms of ``fn()`` over ``repeats`` calls after one warm-up;
  and its result (JAX arrays as numpy)."""
  out = jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best * 1e3, jax.tree.map(
      lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, out)


def compiled(fn, module: nnx.Module, example):
  """``fn(module, x)`` jitted as a pure function of x (no nnx graph
  traversal per call: only the compiled program is timed)."""
  graphdef, state = nnx.split(module)
  program = jax.jit(lambda s, x: fn(nnx.merge(graphdef, s), x)).lower(
      state, example).compile()
  return lambda x: program(state, x)


def load_images(data_dir: Path, count: int) -> tuple[list[np.ndarray],
                                                      np.ndarray]:
  """The first ``count`` holdout images as 224 centre crops (uint8) and
  their labels."""
  folder = data_dir / "imagenet_samples"
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: expected imagenet_samples (the"
                            " holdout images) under --data-dir")
  examples = imagenet_folder.read_split(folder, "holdout")[:count]
  images = []
  for e in examples:
    with Image.open(e.path) as img:
      images.append(pipeline.resize_center_crop(img.convert("RGB"), 256,
                                                224, "bicubic"))
  return images, np.array([e.label for e in examples])


def load_teacher(data_dir: Path):
  """The pretrained EfficientNet-Lite0 (the image codecs' server)."""
  teacher = pretrained.load_efficientnet_lite0(
      data_dir / pretrained.EFFICIENTNET_LITE0_NPZ)
  teacher.eval()
  return teacher


def _row(method, setting, model, sizes, edge, server, hits) -> dict:
  """One row from per-image (compute, encode) and (decode, model) ms.

  A network's forward pass costs the same for every image, so its time is
  the best over all images and repeats (the least disturbed run on this
  shared machine); the coders' and Pillow's times depend on the content,
  so theirs are per-image bests averaged over the images.
  """
  edge, server = np.asarray(edge), np.asarray(server)
  compute, encode = float(edge[:, 0].min()), float(edge[:, 1].mean())
  decode, forward = float(server[:, 0].mean()), float(server[:, 1].min())
  return {"method": method, "setting": setting, "model": model,
          "bytes_per_image": float(np.mean(sizes)),
          "edge_ms": compute + encode,
          "edge_parts_ms": {"compute": compute, "encode": encode},
          "server_ms": decode + forward,
          "server_parts_ms": {"decode": decode, "model": forward},
          "top1_sent": float(np.mean(hits))}


def litert_available() -> bool:
  """Whether the export package and a LiteRT interpreter are installed."""
  try:
    # pylint: disable=g-import-not-at-top
    from hecsb_jax.edge import head as head_lib
    from hecsb_jax.export import folder as export_folder  # pylint: disable=unused-import
  except ImportError:
    return False
  try:
    head_lib.runtime()
  except head_lib.HeadError:
    return False
  return True


def litert_head(model, out_dir: Path):
  """The model's exported .tflite head under LiteRT on one thread, as a
  function of a uint8 [1, H, W, 3] image; and the manifest's model id."""
  # Imported here: the export (JAX side) and LiteRT are needed only on
  # this path.
  from hecsb_jax.edge import head as head_lib  # pylint: disable=g-import-not-at-top
  from hecsb_jax.edge import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from hecsb_jax.export import folder as export_folder  # pylint: disable=g-import-not-at-top

  export_folder.export_model(model, out_dir)
  manifest = manifest_lib.load_manifest(out_dir)
  head = head_lib.Head.from_manifest(manifest, num_threads=1)
  return lambda u8: head(u8.astype(np.float32))


def learned_row(folder: Path, images, labels, teacher_fn, repeats: int,
                export_dir: Path | None = None) -> tuple[dict, list[bytes]]:
  """Edge, payloads and server of one trained model folder.

  With ``export_dir`` (HECS-B only) the edge runs the exported LiteRT head
  (`litert_head`) and sends what it computes; the JAX head's symbols are
  compared with it (``litert_symbols_differ`` counts the differing ones).
  """
  m = saved_model.load(folder)
  method = methods.METHODS[m.method]
  x0 = m.normalize(images[0][None])
  jax_edge = compiled(lambda mod, x: mod.edge_symbols(x), m.module, x0)
  lite = None
  if export_dir is not None and m.method == "hecsb":
    lite = litert_head(m, export_dir / m.name)
  differ = 0
  if method.split:
    server = compiled(lambda mod, s: mod.logits_from_symbols(s), m.module,
                      jax_edge(x0))
  else:  # the codec's image goes to the unmodified teacher
    decode = compiled(lambda mod, s: mod.decode_symbols(s), m.module,
                      jax_edge(x0))
    server = lambda s: teacher_fn(methods.images_from_unit(decode(s)))
  edge_ms, server_ms = [], []
  payloads, hits = [], []
  for image, label in zip(images, labels):
    x = m.normalize(image[None])
    if lite is None:
      compute_ms, symbols = best_ms(lambda: jax_edge(x), repeats)
    else:
      compute_ms, symbols = best_ms(lambda: lite(image[None]), repeats)
      differ += int(np.sum(symbols != np.asarray(jax_edge(x))))
    code_ms, payload = best_ms(lambda: method.to_bytes(symbols, m.tables),
                               repeats)
    decode_ms, received = best_ms(
        lambda: method.from_bytes(payload, m.tables), repeats)
    model_ms, logits = best_ms(lambda: server(received), repeats)
    edge_ms.append((compute_ms, code_ms))
    server_ms.append((decode_ms, model_ms))
    payloads.append(payload[0])
    hits.append(int(np.argmax(logits[0])) == label)
  row = _row(m.method, method.setting(m.value), m.name,
             [len(p) for p in payloads], edge_ms, server_ms, hits)
  row["edge_impl"] = "litert" if lite else "jax"
  if lite:
    row["litert_symbols_differ"] = differ
  return row, payloads


def codec_rows(settings: dict, images, labels, teacher_fn,
               repeats: int) -> list[tuple[dict, list[bytes]]]:
  """Pillow encode (edge), Pillow decode + the whole teacher (server)."""
  out = []
  for method, entries in settings.items():
    for fmt, setting, save_args in entries:
      edge_ms, server_ms, payloads, hits = [], [], [], []
      for image, label in zip(images, labels):
        pil = Image.fromarray(image)

        def encode(pil=pil, fmt=fmt, save_args=save_args):
          buf = io.BytesIO()
          pil.save(buf, format=fmt, **save_args)
          return buf.getvalue()

        def decode(data):
          with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))

        encode_ms, data = best_ms(encode, repeats)
        decode_ms, decoded = best_ms(lambda: decode(data), repeats)
        model_ms, logits = best_ms(lambda: teacher_fn(decoded[None]),
                                   repeats)
        edge_ms.append((0.0, encode_ms))
        server_ms.append((decode_ms, model_ms))
        payloads.append(data)
        hits.append(int(np.argmax(logits[0])) == label)
      out.append((_row(method, setting, None, [len(p) for p in payloads],
                       edge_ms, server_ms,
                       hits), payloads))
  return out


def model_folders(checkpoint_dir: Path) -> tuple[list[Path], list[str]]:
  """Finished model folders (with ``model/``), in split_rd's method order
  then by setting; and the names of unfinished ones (skipped)."""
  done, skipped = [], []
  for folder in sorted(p for p in checkpoint_dir.iterdir() if p.is_dir()):
    (done if (folder / "model").is_dir() else skipped).append(folder)

  def key(folder):
    # "<method>_<label><value>", e.g. hecsb_beta1e-05, crbq_k4.
    method = next((m for m in ORDER if folder.name.startswith(m + "_")),
                  None)
    value = re.fullmatch(r"[a-z]*(.*)", folder.name[len(method or "") + 1:])
    try:
      return (ORDER.index(method) if method else len(ORDER),
              float(value.group(1)), folder.name)
    except ValueError:
      return (len(ORDER), 0.0, folder.name)

  return sorted(done, key=key), [f.name for f in skipped]


def measure_all(checkpoint_dir: Path, data_dir: Path, count: int,
                repeats: int, quick: bool, export_dir: Path | None = None
                ) -> tuple[list[dict], dict[int, list[bytes]], np.ndarray]:
  """Every row's times and payloads (module docstring); the labels of the
  images. ``export_dir``: where to export HECS-B heads to run them under
  LiteRT (None: the JAX head)."""
  images, labels = load_images(data_dir, count)
  teacher = load_teacher(data_dir)
  norm = pipeline.normalization("efficientnet_lite0")
  forward = compiled(lambda mod, x: mod(x), teacher,
                     pipeline.normalize(images[0][None], norm))
  teacher_fn = lambda u8: forward(pipeline.normalize(u8, norm))
  folders, skipped = model_folders(checkpoint_dir)
  if skipped:
    print(f"skipped (no finished model/): {', '.join(skipped)}")
  if not folders:
    print(f"{checkpoint_dir}: no finished model folder; image codecs only")
  results = []
  for folder in folders:
    print(f"  {folder.name}", flush=True)
    results.append(learned_row(folder, images, labels, teacher_fn, repeats,
                               export_dir))
  settings = split_rd_eval.codec_settings(split_rd_config.get_config())
  if quick:
    settings = {k: v[:2] for k, v in settings.items()}
  print("  image codecs", flush=True)
  results += codec_rows(settings, images, labels, teacher_fn, repeats)
  rows = [r for r, _ in results]
  return rows, {i: p for i, (_, p) in enumerate(results)}, labels
