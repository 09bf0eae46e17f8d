"""Scoring on one evaluation set: the teacher, the codecs, learned methods.

    teacher ──────────────────────────────────────────────► top-1/5
    jpeg/webp/png: Pillow encode ─► len(bytes) ─► decode ─► teacher
    learned (split_rd_methods): edge symbols ─► one payload per image
           (coding.compress, or CR+BQ's 8-bit tensor) ─► len(bytes)
           ─► decoded ─► decoder + tail (split methods) or decoded image
           ─► teacher (the neural codec) ─► top-1/5

Every byte count is the length of a real encoded file or container of one
image, header included; the classifier always sees what was decoded from
those bytes.
"""

from __future__ import annotations

import io

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import PIL
from PIL import features
from PIL import Image

from experiments import split_rd_methods as methods
from experiments.split_rd_data import Chunks
from experiments.split_rd_data import Images
from hecsb_jax import coding
from hecsb_jax.data import imagenet_pipeline as pipeline

TOPK = 5


# Jitted once: nnx.jit caches on the module's structure, so every β's
# student (same shapes) and every batch reuse one compilation.
jit_forward = nnx.jit(lambda model, x: model(x))
jit_edge_symbols = nnx.jit(lambda student, x: student.edge_symbols(x))
jit_decode_symbols = nnx.jit(lambda model, s: model.decode_symbols(s))
jit_logits_from_symbols = nnx.jit(
    lambda student, s: student.logits_from_symbols(s))


def _topk_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[N, 2] booleans: label is the top-1 / among the top-5."""
  top = np.argsort(-logits, axis=-1)[:, :TOPK]
  return np.stack([top[:, 0] == labels,
                   (top == labels[:, None]).any(-1)], -1)


def psnr_db(originals: np.ndarray, decoded: np.ndarray) -> np.ndarray:
  """[N] PSNR in dB of each decoded uint8 image against its original
  (peak 255, MSE over pixels and colours; inf where they are equal)."""
  diff = originals.astype(np.float64) - decoded.astype(np.float64)
  mse = np.mean(np.square(diff).reshape(len(diff), -1), axis=1)
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(255.0**2 / mse)


def _mean_psnr(per_image: list[np.ndarray]) -> dict[str, float]:
  """{"psnr_db": mean over images} for a lossy image codec; {} when some
  image came back unchanged (a lossless file has no PSNR to average)."""
  values = np.concatenate(per_image)
  return {"psnr_db": float(values.mean())} if np.isfinite(values).all() \
      else {}


def _batched(fn, x, batch_size: int):
  """fn over fixed-size batches of a pytree of arrays (the last batch
  padded: one compilation); the outputs' leaves concatenated."""
  n = len(jax.tree.leaves(x)[0])
  outs = []
  for i in range(0, n, batch_size):
    chunk = jax.tree.map(lambda a: np.asarray(a)[i : i + batch_size], x)
    size = len(jax.tree.leaves(chunk)[0])
    if size < batch_size:
      chunk = jax.tree.map(
          lambda a: np.concatenate(
              [a, np.repeat(a[-1:], batch_size - size, 0)]), chunk)
    out = fn(jax.tree.map(jnp.asarray, chunk))
    outs.append(jax.tree.map(lambda a: np.asarray(a)[:size], out))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)


class Evaluator:
  """Scores methods on one evaluation set, read in chunks.

  The set is ``chunks()``: a folder's decoded crops as one chunk, or a tfds
  split streamed in batches (never all in memory). Each call below reads
  the set once; every method sees the same images.
  """

  def __init__(self, teacher, chunks: Chunks, config):
    self.teacher = teacher
    self.chunks = chunks
    self.batch_size = config.eval_batch_size
    self.norm = pipeline.normalization(config.backbone)
    self.config = config

  @classmethod
  def in_memory(cls, teacher, data: Images, config) -> "Evaluator":
    return cls(teacher, lambda: [(data.images, data.labels)], config)

  def _normalized(self, images: np.ndarray) -> np.ndarray:
    return pipeline.normalize(images, self.norm)

  @staticmethod
  def _score(hits: list[np.ndarray]) -> dict[str, float]:
    hits = np.concatenate(hits)
    return {"top1": float(hits[:, 0].mean()), "top5": float(hits[:, 1].mean())}

  def teacher_logits(self, images: np.ndarray) -> np.ndarray:
    return _batched(lambda x: jit_forward(self.teacher, x),
                    self._normalized(images), self.batch_size)

  def teacher_score(self) -> dict[str, float]:
    """The unmodified teacher on the images as they are."""
    return self._score([_topk_hits(self.teacher_logits(images), labels)
                        for images, labels in self.chunks()])

  def codecs(self, settings: list[tuple[str, str, dict]]) -> list[dict]:
    """Pillow round trip of every image, then the unmodified teacher: one
    score per (Pillow format, setting name, save arguments), in order,
    with the mean PSNR of the decoded images where they differ."""
    sizes = [[] for _ in settings]
    hits = [[] for _ in settings]
    psnrs = [[] for _ in settings]
    for images, labels in self.chunks():
      for k, (fmt, _, save_args) in enumerate(settings):
        decoded = np.empty_like(images)
        for i, image in enumerate(images):
          buf = io.BytesIO()
          Image.fromarray(image).save(buf, format=fmt, **save_args)
          data = buf.getvalue()
          sizes[k].append(len(data))
          with Image.open(io.BytesIO(data)) as img:
            decoded[i] = np.asarray(img.convert("RGB"))
        hits[k].append(_topk_hits(self.teacher_logits(decoded), labels))
        psnrs[k].append(psnr_db(images, decoded))
    return [{"setting": setting, "bytes_per_image": float(np.mean(sizes[k])),
             **self._score(hits[k]), **_mean_psnr(psnrs[k])}
            for k, (_, setting, _) in enumerate(settings)]

  def learned(self, method: methods.Method, model: nnx.Module,
              tables: coding.CodingTables | None, setting: str) -> dict:
    """Edge symbols -> one payload per image -> received -> server.

    ``model`` is `method.saved`: a `SplitModel` (its decoder and tail
    give the logits) or an image codec (its decoded image, rounded to
    uint8, goes to the unmodified teacher; its point also gets the mean
    PSNR of those images).
    """
    model.eval()
    sizes, hits, psnrs = [], [], []
    for images, labels in self.chunks():
      x = pipeline.normalize(images, method.input_norm(self.config))
      symbols = _batched(lambda x: jit_edge_symbols(model, x), x,
                         self.batch_size)
      payloads = method.to_bytes(symbols, tables)
      sizes.extend(len(p) for p in payloads)
      received = method.from_bytes(payloads, tables)
      if not all(np.array_equal(a, b) for a, b in zip(
          jax.tree.leaves(received), jax.tree.leaves(symbols))):
        raise RuntimeError(f"{method.name} {setting}: decoded symbols differ"
                           " from the sent ones (the coder is broken)")
      if method.split:
        logits = _batched(lambda s: jit_logits_from_symbols(model, s),
                          received, self.batch_size)
      else:
        decoded = _batched(lambda s: jit_decode_symbols(model, s),
                           received, self.batch_size)
        decoded = methods.images_from_unit(decoded)
        psnrs.append(psnr_db(images, decoded))
        logits = self.teacher_logits(decoded)
      hits.append(_topk_hits(logits, labels))
    return {"setting": setting, "bytes_per_image": float(np.mean(sizes)),
            **self._score(hits), **(_mean_psnr(psnrs) if psnrs else {})}


def gflops_per_image(module: nnx.Module, fn, image_size: int) -> float:
  """XLA's FLOP count of ``fn(module, x)`` for one image (multiply and add
  counted apart: about 2x the multiply-accumulates), the edge's cost."""
  graphdef, state = nnx.split(module)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  cost = jax.jit(lambda state, x: fn(nnx.merge(graphdef, state), x)).lower(
      state, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per device
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) / 1e9


def codec_versions() -> str:
  """The libraries behind the codec rows (their bytes depend on them)."""
  return (f"Pillow {PIL.__version__} (libjpeg {features.version('jpg')}, libwebp"
          f" {features.version('webp')}, zlib {features.version('zlib')})")


def codec_settings(config) -> dict[str, list[tuple[str, str, dict]]]:
  """method -> [(Pillow format, setting name, save arguments)]."""
  c = config.codecs
  return {
      # optimize: Huffman tables fitted to the image (smaller files at the
      # same quality, what a careful sender would do).
      "jpeg": [("JPEG", f"q={q}", {"quality": q, "optimize": True})
               for q in c.jpeg_qualities],
      # method 6: libwebp's slowest, smallest encoding.
      "webp": [("WEBP", f"q={q}", {"quality": q, "method": 6})
               for q in c.webp_qualities],
      "png": [("PNG", "lossless", {"compress_level": c.png_compress_level})],
  }
