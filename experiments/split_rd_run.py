"""Training and evaluation of the split rate-accuracy experiment.

    data ─► decoded uint8 224×224 crops (cached once per file list)
      train (dev + extra_images) ─► grain: random resized crop + flip
      │   per β: stage 1 (head distillation) ─► stage 2 (KD) ─► tables.npz
      │          checkpoints under ckpt/hecsb_<β>/{stage1,stage2,model}
      └ eval (holdout of a folder in the imagenet_samples layout)
          teacher ─────────────────────────────────────────► top-1/5
          jpeg/webp/png: Pillow encode ─► len(bytes) ─► decode ─► teacher
          hecsb: edge symbols ─► coding.compress (one image) ─► len(bytes)
                 ─► coding.decompress ─► decoder + tail ─► top-1/5

Every byte count is the length of a real encoded file or container of one
image, header included; the classifier always sees what was decoded from
those bytes. The coding tables are built once, when a model's training
ends, saved beside its parameters, and only loaded afterwards.

Each model's folder holds ``stage1/`` and ``stage2/`` (`fit`'s resumable
checkpoints), ``tables.npz`` and ``model/`` (the finished student and its
fingerprint, written last: its presence means the model is done).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path
import time
import zlib
from typing import Callable, Iterable

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import PIL
from PIL import features
from PIL import Image

from hecsb_jax import coding
from hecsb_jax import entropy
from hecsb_jax.data import imagenet_folder
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.data import pretrained
from hecsb_jax.data.tfds_reader import import_tfds
from hecsb_jax.models import distill_losses as dl
from hecsb_jax.models import hecsb_bottleneck as hb
from hecsb_jax.models.split import SplitModel
from hecsb_jax.train import distributed
from hecsb_jax.train import step as step_lib
from hecsb_jax.train.checkpoint import CheckpointMismatchError
from hecsb_jax.train.checkpoint import TrainCheckpointer
from hecsb_jax.train.checkpoint import compare_fingerprints
from hecsb_jax.train.trainer import FitConfig, fit

# Part of every fingerprint: bump when the same config trains differently.
FORMAT = 1
TOPK = 5


# Jitted once: nnx.jit caches on the module's structure, so every β's
# student (same shapes) and every batch reuse one compilation.
jit_forward = nnx.jit(lambda model, x: model(x))
jit_edge_symbols = nnx.jit(lambda student, x: student.edge_symbols(x))
jit_logits_from_symbols = nnx.jit(
    lambda student, s: student.logits_from_symbols(s))


class MissingModelError(FileNotFoundError):
  """--eval-only found no finished model where the config expects one."""


@dataclasses.dataclass
class Images:
  """Decoded centre crops and what identifies them."""

  images: np.ndarray  # [N, 224, 224, 3] uint8
  labels: np.ndarray  # [N] int32, -1 = unlabelled
  data_id: str  # hash of the file list and preprocessing


# (uint8 [n, S, S, 3] images, int32 [n] labels) pieces of an evaluation set.
Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


# ------------------------------------------------------------------- data


def _cached_crops(examples, cache_dir: Path, tag: str) -> np.ndarray:
  """`imagenet_folder.decode_all` of a file list, decoded once and cached
  under the list's `cache_key` (the scheme of `load_split_cached`, for
  lists that are not a whole split: a subset, extra_images)."""
  key = imagenet_folder.cache_key(examples)[:20]
  path = cache_dir / f"split_rd-{tag}-{key}.npy"
  want = (len(examples), imagenet_folder.CROP, imagenet_folder.CROP, 3)
  if path.is_file():
    try:
      images = np.load(path, allow_pickle=False)
      if images.shape == want and images.dtype == np.uint8:
        return images
    except (OSError, ValueError, EOFError):
      pass
  images = imagenet_folder.decode_all(examples, num_workers=2)
  cache_dir.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
  np.save(tmp, images)
  os.replace(tmp, path)
  return images


@dataclasses.dataclass
class ImageList:
  """Files to decode, listed (and checked) before anything is decoded."""

  examples: list  # [imagenet_folder.Example]
  tag: str  # cache file prefix
  # (folder, split) when these come from a whole split decoded by
  # `load_split_cached`; then `indices` (None: all) picks them from it.
  whole_split: tuple | None = None
  indices: list[int] | None = None


def split_list(folder, split: str, limit: int,
               keep: Callable[[imagenet_folder.Example], bool] | None = None
               ) -> ImageList:
  """The images of a split of an imagenet_samples-layout folder for which
  ``keep`` holds, or only the first ``limit`` of them (0: all).

  A limited list is decoded (and cached) alone; otherwise the whole split
  is, once, and the list is picked from it.
  """
  examples = imagenet_folder.read_split(folder, split)
  indices = [i for i, e in enumerate(examples) if keep is None or keep(e)]
  tag = split if keep is None else f"{split}-part"
  if limit:
    return ImageList([examples[i] for i in indices[:limit]], tag)
  return ImageList([examples[i] for i in indices], tag, (folder, split),
                   None if keep is None else indices)


def extra_list(folder, limit: int) -> ImageList:
  """extra_images (labels.csv + images/; label -1 = no ImageNet label)."""
  folder = Path(folder)
  examples = pipeline.read_image_list(folder / "labels.csv",
                                      folder / "images")
  return ImageList(examples[:limit] if limit else examples, "extra")


def data_id(lists: list[ImageList]) -> str:
  """Hash of every file list (names, sizes, labels) and preprocessing."""
  keys = "".join(imagenet_folder.cache_key(l.examples) for l in lists)
  return hashlib.sha256(keys.encode()).hexdigest()


def decode(lists: list[ImageList], cache_dir) -> Images:
  """The lists' crops, concatenated, decoded through the cache."""
  cache_dir = Path(cache_dir)
  images = []
  for l in lists:
    if l.whole_split:
      whole = imagenet_folder.load_split_cached(*l.whole_split, cache_dir)[0]
      images.append(whole if l.indices is None else whole[l.indices])
    else:
      images.append(_cached_crops(l.examples, cache_dir, l.tag))
  labels = np.array([e.label for l in lists for e in l.examples], np.int32)
  return Images(np.concatenate(images), labels, data_id(lists))


def folder_split(folder, split: str, limit: int, cache_dir) -> Images:
  """`split_list`, decoded."""
  return decode([split_list(folder, split, limit)], cache_dir)


def tuning_part(config) -> Callable[[imagenet_folder.Example], bool]:
  """--tune: the training-split images held out to score settings on
  (class_index % 5 == data.tune_remainder; holdout is % 5 == 4)."""
  return lambda e: e.label % 5 == config.data.tune_remainder


def training_lists(config, data_dir, tune: bool = False
                   ) -> list[ImageList]:
  """dev (+ extra_images): what stage 1 and stage 2 train on; with
  ``tune``, dev without its tuning part."""
  part = tuning_part(config)
  lists = [split_list(Path(data_dir) / config.data.samples_dir,
                      config.data.train_split,
                      config.data.train_limit_per_set,
                      (lambda e: not part(e)) if tune else None)]
  if config.data.extra_dir:
    lists.append(extra_list(Path(data_dir) / config.data.extra_dir,
                            config.data.train_limit_per_set))
  return lists


def weights_path(config, data_dir, weights: str | None) -> Path:
  if weights:
    return Path(weights)
  if config.backbone == "efficientnet_lite0":
    return Path(data_dir) / pretrained.EFFICIENTNET_LITE0_NPZ
  raise FileNotFoundError(f"{config.backbone} needs --weights (a"
                          " torchvision .pth or .safetensors file)")


def load_teacher(config, path: Path) -> nnx.Module:
  """The pretrained backbone, in inference mode."""
  if config.backbone == "efficientnet_lite0":
    return pretrained.load_efficientnet_lite0(path)
  return pretrained.load_resnet50(path)


def file_sha256(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


# ------------------------------------------------------------- tfds data


def tfds_source(split: str, data_dir, limit: int = 0
                ) -> pipeline.TfdsSource:
  """The first ``limit`` (0: all) examples of a split of the prepared tfds
  `imagenet2012` under ``data_dir``.

  Raises:
    FileNotFoundError: it is not prepared there (one line, naming the
      folder and how to prepare it).
  """
  tfds = import_tfds()
  try:
    return pipeline.imagenet2012_source(split, data_dir, limit)
  except (AssertionError, tfds.core.DatasetNotFoundError) as e:
    # tfds says "manual directory ... does not exist" for an unprepared
    # imagenet2012: the tars are a manual download.
    raise FileNotFoundError(
        f"{data_dir}: no prepared tfds imagenet2012 (split {split!r});"
        " prepare it once with hecsb_jax.data.imagenet_pipeline."
        "prepare_imagenet2012(DATA_DIR, MANUAL_DIR), MANUAL_DIR holding"
        f" {' and '.join(pipeline.IMAGENET2012_TARS)}"
        f" ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    ) from e


def tfds_split_name(split: str, limit: int) -> str:
  """How results name the first ``limit`` examples of a split (tfds's
  slice syntax)."""
  return f"{split}[:{limit}]" if limit else split


def tfds_data_id(split: str, source) -> str:
  """What identifies a tfds training split: its name and size."""
  return hashlib.sha256(
      f"tfds imagenet2012 {split} {len(source)}".encode()).hexdigest()


def tfds_chunks(source, config) -> Chunks:
  """The evaluation split streamed in batches of uint8 centre crops
  (resize to 256/224 of the crop side, config.data.interpolation)."""
  crop = config.data.image_size
  resize = int(round(crop * pipeline.RESIZE / pipeline.IMAGE_SIZE))

  def chunks():
    for batch in pipeline.eval_batches(
        source, batch_size=config.eval_batch_size, norm=None, resize=resize,
        crop=crop, interpolation=config.data.interpolation):
      yield batch["image"], batch["label"]

  return chunks


# ---------------------------------------------------------------- models


def model_seed(config, beta: float) -> int:
  """Seed of one β's model and data order, from β itself (not its place in
  --betas, so a model resumes the same whichever list names it)."""
  return (config.seed + zlib.crc32(f"{beta:g}".encode())) % 2**31


def build_pair(teacher, config, beta: float) -> dl.TeacherStudent:
  """A fresh student (HECS-B bottleneck at the split) beside the teacher."""
  h = config.hecsb
  rngs = nnx.Rngs(model_seed(config, beta))
  if h.acquisition == "shallow" and not h.train_acquisition:
    raise ValueError("a from-scratch shallow acquisition must be trained:"
                     " set hecsb.train_acquisition (split_rd --acquisition"
                     " shallow does)")
  if h.acquisition == "prefix":
    acquisition = hb.TeacherPrefix(nnx.clone(teacher), config.split)
    channels = config.feature_channels
  else:
    acquisition = hb.ShallowAcquisition(tuple(h.shallow_widths), rngs=rngs)
    channels = h.shallow_widths[-1]
  bottleneck = hb.HecsbBottleneck(
      acquisition, channels, h.num_measurements, config.feature_channels,
      decoder_width=h.decoder_width, decoder_blocks=h.decoder_blocks,
      measurement_init_std=h.measurement_init_std,
      prior_init_scale=h.prior_init_scale, rngs=rngs)
  student = SplitModel(nnx.clone(teacher), config.split, bottleneck)
  return dl.TeacherStudent(teacher, student)


def stage2_filter(config):
  """What stage 2 trains (config.stage2.train)."""
  which = config.stage2.train
  if which == "decoder":
    return nnx.All(nnx.Param, nnx.PathContains("student"),
                   nnx.PathContains("decoder"))
  if which == "decoder_tail":
    return dl.stage2_trainable(train_encoder=False)
  if which == "student":
    return dl.stage2_trainable(
        train_encoder=True,
        train_acquisition=config.hecsb.train_acquisition)
  raise ValueError(f"stage2.train must be decoder, decoder_tail or student,"
                   f" got {which!r}")


def model_name(beta: float) -> str:
  return f"hecsb_beta{beta:g}"


def model_fingerprint(config, beta: float, data_id: str,
                      teacher_id: str) -> dict:
  return {
      "format": FORMAT, "beta": beta, "backbone": config.backbone,
      "split": config.split, "teacher_sha256": teacher_id,
      "train_data": data_id, "seed": config.seed,
      "hecsb": {k: v for k, v in config.hecsb.to_dict().items()
                if k != "betas"},
      "stage1": config.stage1.to_dict(), "stage2": config.stage2.to_dict(),
      "image_size": config.data.image_size,
      "crop_scale": list(config.data.crop_scale),
  }


def _fit_config(section, seed) -> FitConfig:
  return FitConfig(
      epochs=section.epochs, batch_size=section.batch_size,
      learning_rate=section.learning_rate, schedule=section.schedule,
      warmup_epochs=section.warmup_epochs, seed=seed)


def check_checkpoints(model_dir: Path, fingerprint: dict) -> None:
  """Refuses, before any work, checkpoints made with other settings.

  `fit` checks its own checkpoints too, but only once the training data is
  decoded; this reads just the JSON records.

  Raises:
    CheckpointMismatchError: naming the folder and the differing fields.
  """
  for part, expected in (("model", fingerprint),
                         ("stage1", dict(fingerprint, stage="stage1")),
                         ("stage2", dict(fingerprint, stage="stage2"))):
    directory = model_dir / part
    if not directory.is_dir():
      continue
    checkpointer = TrainCheckpointer(directory)
    try:
      step = checkpointer.latest_step()
      if step is None:
        continue
      saved = checkpointer.restore_meta(step).get("fingerprint") or {}
    finally:
      checkpointer.close()
    differences = compare_fingerprints(
        saved if part == "model" else saved.get("run"), expected)
    if differences:
      raise CheckpointMismatchError(str(directory), differences)


def _restore_student(pair, model_dir: Path, fingerprint: dict,
                     keys: tuple[str, ...] | None = None) -> dict | None:
  """Loads a finished student into ``pair``; its meta, or None if absent.

  The saved fingerprint must equal ``fingerprint`` (only its ``keys``, when
  given: what shapes the model, for scoring without the training data).
  """
  ckpt_dir = model_dir / "model"
  if not ckpt_dir.is_dir():
    return None
  checkpointer = TrainCheckpointer(ckpt_dir)
  try:
    step = checkpointer.latest_step()
    if step is None:
      return None
    saved = checkpointer.restore_meta(step).get("fingerprint") or {}
    if keys is not None:
      saved = {k: saved.get(k) for k in keys}
      fingerprint = {k: fingerprint[k] for k in keys}
    differences = compare_fingerprints(saved, fingerprint)
    if differences:
      raise CheckpointMismatchError(str(ckpt_dir), differences)
    state, meta = checkpointer.restore(step, nnx.state(pair.student))
  finally:
    checkpointer.close()
  nnx.update(pair.student, state)
  return meta


def train_model(pair, source, config, beta: float, model_dir: Path,
                fingerprint: dict, *, progress: bool,
                log: Callable[[str], None]) -> dict:
  """Stage 1, stage 2 (each resumable), then the tables; or the finished
  model if ``model_dir/model`` holds one. Returns a summary.

  ``source`` is the training images (a grain random-access source). With
  several processes each reads its part of every batch; all take part in
  the checkpoints, and process 0 writes the tables.
  """
  meta = _restore_student(pair, model_dir, fingerprint)
  if meta is not None:
    log(f"{model_dir.name}: finished model restored (nothing to train)")
    return dict(meta["summary"], epochs_run=0)
  norm = pipeline.normalization(config.backbone)
  seed = model_seed(config, beta)
  mesh = step_lib.data_mesh() if jax.device_count() > 1 else None
  shard = (jax.process_index(), jax.process_count())
  h = config.hecsb
  frozen_prefix = h.acquisition == "prefix" and not h.train_acquisition
  summary, epochs_run = {}, 0
  for stage, section in (("stage1", config.stage1),
                         ("stage2", config.stage2)):
    if section.epochs == 0:
      continue
    batches = pipeline.train_fn(
        source, batch_size=section.batch_size, seed=seed, norm=norm,
        size=config.data.image_size, scale=tuple(config.data.crop_scale),
        shard=shard)
    if stage == "stage1":
      loss_fn = dl.make_stage1_loss(
          beta, reuse_teacher_features=frozen_prefix)
      trainable = dl.stage1_trainable(h.train_acquisition)
      shown = ("mse", "bits_per_image")
    else:
      loss_fn = dl.make_stage2_loss(
          section.alpha, section.temperature,
          beta=beta if section.train == "student" else 0.0)
      trainable = stage2_filter(config)
      shown = ("kl", "bits_per_image")
    t = time.perf_counter()
    result = fit(
        pair, loss_fn, batches, None, _fit_config(section, seed),
        workdir=os.fspath(model_dir / stage),
        fingerprint=dict(fingerprint, stage=stage), trainable=trainable,
        project_fn=dl.project,
        lr_multipliers=dl.entropy_model_lr(section.prior_lr_multiplier),
        steps_per_epoch=pipeline.steps_per_epoch(source, section.batch_size),
        mesh=mesh, desc=f"{model_dir.name} {stage}",
        progress=progress and distributed.is_primary(),
        progress_metrics=shown)
    epochs_run += result.epochs_run
    last = result.history[-1] if result.history else {}
    summary[stage] = {k: v for k, v in last.items()
                      if k.startswith("train_") or k == "examples_per_s"}
    log(f"{model_dir.name} {stage}: {result.epochs_run} epochs trained in"
        f" {time.perf_counter() - t:.0f} s; last epoch "
        + ", ".join(f"{k} {v:.4g}" for k, v in summary[stage].items()))
  # The tables, built once from the trained prior and saved beside the
  # parameters; evaluation (and any receiver) only ever loads them.
  tables = entropy.build_tables(pair.student.bottleneck.entropy,
                                precision=h.table_precision,
                                tail_mass=h.table_tail_mass)
  if distributed.is_primary():  # the same tables on every process
    tables_path = model_dir / "tables.npz"
    tmp = model_dir / f"tables.tmp{os.getpid()}.npz"
    tables.save_npz(tmp)
    os.replace(tmp, tables_path)
  summary["model_id"] = coding.model_id(tables).hex()
  checkpointer = TrainCheckpointer(model_dir / "model")
  try:
    checkpointer.save(0, nnx.state(pair.student),
                      {"fingerprint": fingerprint, "summary": summary})
  finally:
    checkpointer.close()
  distributed.barrier(f"{model_dir.name} done")  # tables.npz is written
  return dict(summary, epochs_run=epochs_run)


def load_finished_model(pair, config, beta: float, model_dir: Path) -> dict:
  """--eval-only: the finished student of ``model_dir`` (no training, no
  training data); its summary."""
  missing = [p for p in (model_dir / "model", model_dir / "tables.npz")
             if not p.exists()]
  meta = None
  if not missing:
    # The parts of the fingerprint that shape the model (the data's hash
    # and the teacher file's are not known without the training data).
    meta = _restore_student(pair, model_dir,
                            model_fingerprint(config, beta, "", ""),
                            keys=("format", "backbone", "split", "hecsb"))
  if meta is None:
    raise MissingModelError(
        f"{missing[0] if missing else model_dir / 'model'}: no finished"
        " model (train it first: run without --eval-only, with the same"
        " --out, --quick and --betas)")
  return meta["summary"]


# ------------------------------------------------------------- evaluation


def _topk_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[N, 2] booleans: label is the top-1 / among the top-5."""
  top = np.argsort(-logits, axis=-1)[:, :TOPK]
  return np.stack([top[:, 0] == labels,
                   (top == labels[:, None]).any(-1)], -1)


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over fixed-size batches (the last one padded: one compilation)."""
  outs = []
  for i in range(0, len(x), batch_size):
    chunk = x[i : i + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    outs.append(np.asarray(fn(jnp.asarray(chunk)))[: batch_size - pad])
  return np.concatenate(outs)


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
    score per (Pillow format, setting name, save arguments), in order."""
    sizes = [[] for _ in settings]
    hits = [[] for _ in settings]
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
    return [{"setting": setting, "bytes_per_image": float(np.mean(sizes[k])),
             **self._score(hits[k])}
            for k, (_, setting, _) in enumerate(settings)]

  def hecsb(self, student: SplitModel, tables: coding.CodingTables,
            setting: str) -> dict:
    """Edge symbols -> one container per image -> decoded -> server."""
    student.eval()
    sizes, hits = [], []
    for images, labels in self.chunks():
      symbols = _batched(
          lambda x: jit_edge_symbols(student, x),
          self._normalized(images), self.batch_size)
      received = np.empty_like(symbols)
      for i in range(len(symbols)):
        data = coding.compress(symbols[i : i + 1], tables)
        sizes.append(len(data))
        received[i] = coding.decompress(data, tables)[0]
      if not np.array_equal(received, symbols):
        raise RuntimeError(f"{setting}: decoded symbols differ from the"
                           " sent ones (the coder is broken)")
      logits = _batched(
          lambda s: jit_logits_from_symbols(student, s),
          received, self.batch_size)
      hits.append(_topk_hits(logits, labels))
    return {"setting": setting, "bytes_per_image": float(np.mean(sizes)),
            **self._score(hits)}


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


# ---------------------------------------------------------------- the run


def model_dirs(config, out: Path) -> list[tuple[float, Path]]:
  return [(beta, out / "ckpt" / model_name(beta))
          for beta in config.hecsb.betas]


def run_experiment(
    config: ml_collections.ConfigDict,
    data_dir: Path,
    out: Path,
    *,
    eval_dir: Path | None,
    eval_only: bool = False,
    tune: bool = False,
    weights: str | None = None,
    cache_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict, dict]:
  """Trains what is missing (unless ``eval_only``) and scores every method.

  Every input (weights, the evaluation data, the training data and, with
  ``eval_only``, every finished model) is checked before anything is
  trained or scored. With ``tune``, the models train without the tuning
  part of the training split (`tuning_part`) and are scored on it
  (``eval_dir`` is then the training folder), never on holdout.

  config.data.source "folder": the folders under ``data_dir``, decoded
  once through ``cache_dir``, scored on ``eval_dir``. "tfds": the
  prepared `imagenet2012` of the tfds data_dir ``data_dir``, streamed;
  scored on its validation split (``eval_dir`` and ``tune`` unused).

  Returns:
    (results in the schema of results.json, details: sizes, per-model
    training summaries, times).
  """
  started = time.perf_counter()
  teacher_file = weights_path(config, data_dir, weights)
  if not teacher_file.is_file():
    raise FileNotFoundError(f"{teacher_file}: weights file not found")
  from_tfds = config.data.source == "tfds"
  if from_tfds:
    split = tfds_split_name(config.data.tfds_eval_split,
                            config.data.eval_limit)
    eval_source = tfds_source(config.data.tfds_eval_split, data_dir,
                              config.data.eval_limit)
  elif tune:
    split = f"{config.data.train_split}-tune"
    eval_list = split_list(eval_dir, config.data.train_split,
                           config.data.eval_limit, tuning_part(config))
  else:
    split = config.data.eval_split
    eval_list = split_list(eval_dir, split, config.data.eval_limit)
  use_hecsb = "hecsb" in config.methods
  teacher_id = file_sha256(teacher_file)
  train_lists, train_source, fingerprints = None, None, {}
  if use_hecsb and eval_only:
    for _, model_dir in model_dirs(config, out):
      for path in (model_dir / "model", model_dir / "tables.npz"):
        if not path.exists():
          raise MissingModelError(
              f"{path}: no finished model (train it first: run without"
              " --eval-only, with the same --out, --quick and --betas)")
  elif use_hecsb:
    if from_tfds:
      limit = config.data.train_limit_per_set
      train_source = tfds_source(config.data.tfds_train_split, data_dir,
                                 limit)
      train_id = tfds_data_id(
          tfds_split_name(config.data.tfds_train_split, limit), train_source)
    else:
      train_lists = training_lists(config, data_dir, tune)
      train_id = data_id(train_lists)
    for beta, model_dir in model_dirs(config, out):
      fingerprints[beta] = model_fingerprint(config, beta, train_id,
                                             teacher_id)
      check_checkpoints(model_dir, fingerprints[beta])
  # Everything is known to be there and consistent: now the slow part.
  teacher = load_teacher(config, teacher_file)
  if from_tfds:
    evaluator = Evaluator(teacher, tfds_chunks(eval_source, config), config)
    num_eval = len(eval_source)
    eval_where = f"tfds imagenet2012 in {data_dir}"
  else:
    eval_data = decode([eval_list], cache_dir)
    if train_lists is not None:
      train = decode(train_lists, cache_dir)
      train_source = pipeline.ArraySource(train.images, train.labels)
      log(f"training images: {len(train.images)}"
          f" ({int((train.labels >= 0).sum())} labelled)")
    evaluator = Evaluator.in_memory(teacher, eval_data, config)
    num_eval = len(eval_data.images)
    eval_where = os.fspath(eval_dir)
  log(f"{split} images: {num_eval} from {eval_where}")
  results = {"teacher": evaluator.teacher_score(), "split": split,
             "methods": {}}
  log(f"teacher: top-1 {results['teacher']['top1']:.3f}, top-5"
      f" {results['teacher']['top5']:.3f}")
  size = config.data.image_size
  details = {"eval_dir": eval_where,
             "teacher_gflops_per_image": gflops_per_image(
                 teacher, lambda model, x: model(x), size),
             "num_eval_images": num_eval,
             "num_train_images": (0 if train_source is None
                                  else len(train_source)),
             "models": {}}

  def record(method, score):
    results["methods"].setdefault(method, []).append(score)
    log(f"{method:<5s} {score['setting']:<14s} {score['bytes_per_image']:9.1f}"
        f" B/image  top-1 {score['top1']:.3f}  top-5 {score['top5']:.3f}")

  if use_hecsb:
    for beta, model_dir in model_dirs(config, out):
      pair = build_pair(teacher, config, beta)
      if eval_only:
        summary = load_finished_model(pair, config, beta, model_dir)
      else:
        summary = train_model(pair, train_source, config, beta, model_dir,
                              fingerprints[beta], progress=progress, log=log)
      details["models"][model_name(beta)] = dict(
          summary, edge_gflops_per_image=gflops_per_image(
              pair.student, lambda student, x: student.edge_symbols(x),
              size))
      tables = coding.load_tables(model_dir / "tables.npz")
      record("hecsb", evaluator.hecsb(pair.student, tables, f"beta={beta:g}"))
  # Every codec setting in one pass over the images (one decode of a
  # streamed split, not one per setting).
  settings = codec_settings(config)
  chosen = [(method, setting) for method in config.methods
            for setting in settings.get(method, [])]
  if chosen:
    scores = evaluator.codecs([setting for _, setting in chosen])
    for (method, _), score in zip(chosen, scores):
      record(method, score)
  details["codecs"] = codec_versions()
  details["seconds"] = time.perf_counter() - started
  return results, details
