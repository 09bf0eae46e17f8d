"""The split students of the rate-accuracy experiment: build, train, load.

One HECS-B student per β beside the frozen teacher. Each model's folder,
``OUT/ckpt/hecsb_beta<β>/``, holds ``stage1/`` and ``stage2/`` (`fit`'s
resumable checkpoints), ``tables.npz`` and ``model/`` (the finished
student and its fingerprint, written last: its presence means the model
is done). The coding tables are built once, when a model's training ends,
saved beside its parameters, and only loaded afterwards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
import time
import zlib
from typing import Callable

from flax import nnx
import jax

from hecsb_jax import coding
from hecsb_jax import entropy
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.data import pretrained
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

class MissingModelError(FileNotFoundError):
  """--eval-only found no finished model where the config expects one."""


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


def model_dirs(config, out: Path) -> list[tuple[float, Path]]:
  return [(beta, out / "ckpt" / model_name(beta))
          for beta in config.hecsb.betas]
