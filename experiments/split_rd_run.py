"""The split rate-accuracy experiment: train what is missing, score all.

    data (split_rd_data) ─► train: dev + extra_images ─► grain: random
      │   resized crop + flip ─► per learned method and setting
      │   (split_rd_methods): its stages ─► tables.npz (split_rd_models)
      └ eval: a folder's holdout ─► teacher, codecs, learned methods
                                                        (split_rd_eval)

`run_experiment` checks every input first (weights, evaluation data,
training data, existing checkpoints' fingerprints), then does the slow
part.
"""

from __future__ import annotations

import os
from pathlib import Path
import time
from typing import Callable

import ml_collections

from experiments import split_rd_data as data
from experiments import split_rd_eval as evaluation
from experiments import split_rd_models as models
from hecsb_jax import coding
from hecsb_jax.data import imagenet_pipeline as pipeline


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
  teacher_file = models.weights_path(config, data_dir, weights)
  if not teacher_file.is_file():
    raise FileNotFoundError(f"{teacher_file}: weights file not found")
  from_tfds = config.data.source == "tfds"
  if from_tfds:
    split = data.tfds_split_name(config.data.tfds_eval_split,
                                 config.data.eval_limit)
    eval_source = data.tfds_source(config.data.tfds_eval_split, data_dir,
                                   config.data.eval_limit)
  elif tune:
    split = data.tune_split_name(config)
    eval_list = data.split_list(eval_dir, config.data.train_split,
                                config.data.eval_limit,
                                data.tuning_part(config))
  else:
    split = config.data.eval_split
    eval_list = data.split_list(eval_dir, split, config.data.eval_limit)
  learned = models.model_dirs(config, out)  # (method, value, folder)
  teacher_id = models.file_sha256(teacher_file)
  train_lists, train_source, fingerprints = None, None, {}
  if learned and eval_only:
    for method, _, model_dir in learned:
      for path in models.finished_parts(method, model_dir):
        if not path.exists():
          raise models.MissingModelError(
              f"{path}: no finished model (train it first: run without"
              " --eval-only, with the same --out, --quick, --methods and"
              " settings)")
  elif learned:
    if from_tfds:
      limit = config.data.train_limit_per_set
      train_source = data.tfds_source(config.data.tfds_train_split,
                                      data_dir, limit)
      train_id = data.tfds_data_id(
          data.tfds_split_name(config.data.tfds_train_split, limit),
          train_source)
    else:
      train_lists = data.training_lists(config, data_dir, tune)
      train_id = data.data_id(train_lists)
    for method, value, model_dir in learned:
      fingerprints[model_dir] = models.model_fingerprint(
          method, config, value, train_id, teacher_id)
      models.check_checkpoints(method, config, value, model_dir,
                               fingerprints[model_dir])
  # Everything is known to be there and consistent: now the slow part.
  teacher = models.load_teacher(config, teacher_file)
  if from_tfds:
    evaluator = evaluation.Evaluator(
        teacher, data.tfds_chunks(eval_source, config), config)
    num_eval = len(eval_source)
    eval_where = f"tfds imagenet2012 in {data_dir}"
  else:
    eval_data = data.decode([eval_list], cache_dir)
    if train_lists is not None:
      train = data.decode(train_lists, cache_dir)
      train_source = pipeline.ArraySource(train.images, train.labels)
      log(f"training images: {len(train.images)}"
          f" ({int((train.labels >= 0).sum())} labelled)")
    evaluator = evaluation.Evaluator.in_memory(teacher, eval_data, config)
    num_eval = len(eval_data.images)
    eval_where = os.fspath(eval_dir)
  log(f"{split} images: {num_eval} from {eval_where}")
  results = {"teacher": evaluator.teacher_score(), "split": split,
             "methods": {}}
  log(f"teacher: top-1 {results['teacher']['top1']:.3f}, top-5"
      f" {results['teacher']['top5']:.3f}")
  size = config.data.image_size
  details = {"eval_dir": eval_where,
             "teacher_gflops_per_image": evaluation.gflops_per_image(
                 teacher, lambda model, x: model(x), size),
             "num_eval_images": num_eval,
             "num_train_images": (0 if train_source is None
                                  else len(train_source)),
             "models": {}}

  def record(method, score):
    results["methods"].setdefault(method, []).append(score)
    log(f"{method:<12s} {score['setting']:<14s} {score['bytes_per_image']:9.1f}"
        f" B/image  top-1 {score['top1']:.3f}  top-5 {score['top5']:.3f}")

  for method, value, model_dir in learned:
    model = method.build(teacher, config, value)
    if eval_only:
      summary = models.load_finished_model(method, model, config, value,
                                           model_dir)
    else:
      summary = models.train_model(
          method, model, train_source, config, value, model_dir,
          fingerprints[model_dir], progress=progress, log=log)
    saved = method.saved(model)
    details["models"][model_dir.name] = dict(
        summary, edge_gflops_per_image=evaluation.gflops_per_image(
            saved, lambda module, x: module.edge_symbols(x), size))
    tables = (coding.load_tables(model_dir / "tables.npz")
              if method.entropy_coded else None)
    record(method.name, evaluator.learned(method, saved, tables,
                                          method.setting(value)))
  # Every codec setting in one pass over the images (one decode of a
  # streamed split, not one per setting).
  settings = evaluation.codec_settings(config)
  chosen = [(method, setting) for method in config.methods
            for setting in settings.get(method, [])]
  if chosen:
    scores = evaluator.codecs([setting for _, setting in chosen])
    for (method, _), score in zip(chosen, scores):
      record(method, score)
  details["codecs"] = evaluation.codec_versions()
  details["seconds"] = time.perf_counter() - started
  return results, details
