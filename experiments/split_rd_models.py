"""The learned models of the rate-accuracy experiment: train, save, load.

One model per (method, value) (`split_rd_methods`). Its folder,
``OUT/ckpt/<method>_<label><value>/`` (e.g. ``hecsb_beta1e-05``), holds a
resumable `fit` checkpoint per stage (``stage1/``, ``stage2/``; the image
codec's ``codec/``), ``tables.npz`` for the entropy-coded methods and
``model/`` (the finished model and its fingerprint, written last: its
presence means the model is done). The coding tables are built once, when
a model's training ends, saved beside its parameters, and only loaded
afterwards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
import time
from typing import Callable

from flax import nnx
import jax
import numpy as np

from experiments import split_rd_methods as methods
from hecsb_jax import coding
from hecsb_jax import entropy
from hecsb_jax.data import imagenet_pipeline as pipeline
from hecsb_jax.data import pretrained
from hecsb_jax.models import distill_losses as dl
from hecsb_jax.train import distributed
from hecsb_jax.train import step as step_lib
from hecsb_jax.train.checkpoint import CheckpointMismatchError
from hecsb_jax.train.checkpoint import TrainCheckpointer
from hecsb_jax.train.checkpoint import compare_fingerprints
from hecsb_jax.train.trainer import fit

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


def model_dirs(config, out: Path
               ) -> list[tuple[methods.Method, float, Path]]:
  """(method, value, folder) of every learned model the config names."""
  return [(method, value, out / "ckpt" / method.model_name(value))
          for method in methods.learned(config)
          for value in method.values(config)]


def model_fingerprint(method: methods.Method, config, value: float,
                      data_id: str, teacher_id: str) -> dict:
  return method.fingerprint(config, value, data_id, teacher_id, FORMAT)


def check_checkpoints(method: methods.Method, config, value: float,
                      model_dir: Path, fingerprint: dict) -> None:
  """Refuses, before any work, checkpoints made with other settings.

  `fit` checks its own checkpoints too, but only once the training data is
  decoded; this reads just the JSON records.

  Raises:
    CheckpointMismatchError: naming the folder and the differing fields.
  """
  parts = [("model", fingerprint)]
  if not (model_dir / "model").is_dir():
    # A finished model is checked by its own fingerprint: its stages
    # never run again.
    parts += method.stage_fingerprints(config, value, fingerprint)
  for part, expected in parts:
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


def _restore(module: nnx.Module, model_dir: Path, fingerprint: dict,
             keys: tuple[str, ...] | None = None) -> dict | None:
  """Loads a finished model into ``module``; its meta, or None if absent.

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
    state, meta = checkpointer.restore(step, nnx.state(module))
  finally:
    checkpointer.close()
  nnx.update(module, state)
  return meta


def _first_images(source, n: int, *, seed: int, norm, config):
  """The first n images of the first epoch's augmented batches (every
  process reads the same ones, unsharded); fewer if one epoch of full
  batches has fewer."""
  n = min(n, len(source))
  batches = pipeline.train_batches(
      source, batch_size=min(n, 32), seed=seed, epoch=0, norm=norm,
      size=config.data.image_size, scale=tuple(config.data.crop_scale))
  images, count = [], 0
  for batch in batches:
    images.append(batch["image"])
    count += len(batch["image"])
    if count >= n:
      break
  return np.concatenate(images)[:n]


def train_model(method: methods.Method, model: nnx.Module, source, config,
                value: float, model_dir: Path, fingerprint: dict, *,
                progress: bool, log: Callable[[str], None]) -> dict:
  """The method's stages (each resumable), then its tables; or the
  finished model if ``model_dir/model`` holds one. Returns a summary.

  ``source`` is the training images (a grain random-access source). With
  several processes each reads its part of every batch; all take part in
  the checkpoints, and process 0 writes the tables.
  """
  saved = method.saved(model)
  meta = _restore(saved, model_dir, fingerprint)
  if meta is not None:
    log(f"{model_dir.name}: finished model restored (nothing to train)")
    return dict(meta["summary"], epochs_run=0)
  norm = method.input_norm(config)
  seed = method.seed(config, value)
  mesh = step_lib.data_mesh() if jax.device_count() > 1 else None
  shard = (jax.process_index(), jax.process_count())
  summary, epochs_run = {}, 0
  started = method.start(model, config, lambda n: _first_images(
      source, n, seed=seed, norm=norm, config=config))
  if started:
    log(f"{model_dir.name}: {started}")
  stage_fingerprints = dict(
      method.stage_fingerprints(config, value, fingerprint))
  for stage in method.stages(config, value):
    if stage.fit_config.epochs == 0:
      continue
    batches = pipeline.train_fn(
        source, batch_size=stage.fit_config.batch_size, seed=seed, norm=norm,
        size=config.data.image_size, scale=tuple(config.data.crop_scale),
        shard=shard)
    t = time.perf_counter()
    result = fit(
        model, stage.loss_fn, batches, None, stage.fit_config,
        workdir=os.fspath(model_dir / stage.name),
        fingerprint=stage_fingerprints[stage.name],
        trainable=stage.trainable, project_fn=dl.project,
        lr_multipliers=dl.entropy_model_lr(stage.prior_lr_multiplier),
        steps_per_epoch=pipeline.steps_per_epoch(
            source, stage.fit_config.batch_size),
        mesh=mesh, desc=f"{model_dir.name} {stage.name}",
        progress=progress and distributed.is_primary(),
        progress_metrics=stage.shown)
    epochs_run += result.epochs_run
    last = result.history[-1] if result.history else {}
    summary[stage.name] = {k: v for k, v in last.items()
                           if k.startswith("train_") or k == "examples_per_s"}
    log(f"{model_dir.name} {stage.name}: {result.epochs_run} epochs trained"
        f" in {time.perf_counter() - t:.0f} s; last epoch "
        + ", ".join(f"{k} {v:.4g}" for k, v in summary[stage.name].items()))
  if method.entropy_coded:
    # The tables, built once from the trained prior and saved beside the
    # parameters; evaluation (and any receiver) only ever loads them.
    h = config.hecsb
    tables = entropy.build_tables(method.entropy_model(model),
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
    checkpointer.save(0, nnx.state(saved),
                      {"fingerprint": fingerprint, "summary": summary})
  finally:
    checkpointer.close()
  distributed.barrier(f"{model_dir.name} done")  # tables.npz is written
  return dict(summary, epochs_run=epochs_run)


def finished_parts(method: methods.Method, model_dir: Path) -> list[Path]:
  """What a finished model's folder holds."""
  return [model_dir / "model"] + (
      [model_dir / "tables.npz"] if method.entropy_coded else [])


def load_finished_model(method: methods.Method, model: nnx.Module, config,
                        value: float, model_dir: Path) -> dict:
  """--eval-only: the finished model of ``model_dir`` (no training, no
  training data) into ``model``; its summary."""
  missing = [p for p in finished_parts(method, model_dir) if not p.exists()]
  meta = None
  if not missing:
    # The parts of the fingerprint that shape the model (the data's hash
    # and the teacher file's are not known without the training data).
    meta = _restore(method.saved(model), model_dir,
                    model_fingerprint(method, config, value, "", ""),
                    keys=method.shape_keys())
  if meta is None:
    raise MissingModelError(
        f"{missing[0] if missing else model_dir / 'model'}: no finished"
        " model (train it first: run without --eval-only, with the same"
        " --out, --quick, --methods and settings)")
  return meta["summary"]
