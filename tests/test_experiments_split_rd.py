"""End-to-end: `python -m experiments.split_rd --quick` (one β), its rerun,
--eval-only on another folder, and the one-line errors."""

import csv
import io
import json
import os
from pathlib import Path
import shutil

import numpy as np
from PIL import Image
import pytest

from experiments import split_rd
from experiments import split_rd_report

DATA_DIR = Path(os.environ.get(
    "HECSB_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
NEEDED = ("imagenet_samples", "extra_images", "weights/efficientnet_lite0")
BETA = 1e-4


def _data_dir() -> Path:
  missing = [sub for sub in NEEDED if not (DATA_DIR / sub).exists()]
  if missing:
    reason = (f"shared data {', '.join(missing)} not found under {DATA_DIR}"
              " (set HECSB_DATA_DIR)")
    if os.environ.get("HECSB_REQUIRE_DATA", "") == "1":
      pytest.fail(f"HECSB_REQUIRE_DATA=1 but {reason}")
    pytest.skip(reason)
  return DATA_DIR


def _args(out, cache, *extra):
  return ["--quick", "--betas", str(BETA), "--data-dir", str(_data_dir()),
          "--out", str(out), "--cache-dir", str(cache), "--no-progress",
          *extra]


def _ckpt_files(out):
  return {p: p.stat().st_mtime_ns for p in (out / "ckpt").rglob("*")
          if p.is_file()}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """One --quick run (one β) shared by the tests below."""
  root = tmp_path_factory.mktemp("split_rd")
  out, cache = root / "run", root / "cache"
  results = split_rd.main(_args(out, cache))
  return out, cache, results


@pytest.mark.slow
def test_quick_run_writes_every_output_in_the_schema(quick):
  out, _, results = quick
  on_disk = json.loads((out / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  split_rd_report.check_schema(on_disk)
  assert on_disk["split"] == "holdout"
  assert set(on_disk["methods"]) == {"hecsb", "svb", "crbq", "neural_codec",
                                     "jpeg", "webp", "png"}
  methods = on_disk["methods"]
  assert [s["setting"] for s in methods["hecsb"]] == [f"beta={BETA:g}"]
  # The quick config's baselines, each trained and scored.
  assert [s["setting"] for s in methods["svb"]] == ["beta=0.0001",
                                                    "beta=0.001"]
  assert [s["setting"] for s in methods["neural_codec"]] == [
      "lambda=0.0067", "lambda=0.0932"]
  # CR+BQ sends its 8-bit tensor and a 16-byte header, nothing else.
  assert [(s["setting"], s["bytes_per_image"]) for s in methods["crbq"]] == [
      ("k=2", 16 + 28 * 28 * 2), ("k=8", 16 + 28 * 28 * 8)]
  assert len(methods["jpeg"]) >= 5 and len(methods["webp"]) >= 5
  for scores in methods.values():
    for s in scores:
      assert s["bytes_per_image"] > 0 and 0 <= s["top1"] <= s["top5"] <= 1
  # Lossless PNG hands the teacher its own input.
  assert methods["png"][0]["top1"] == on_disk["teacher"]["top1"]
  jpeg = sorted(methods["jpeg"], key=lambda s: int(s["setting"][2:]))
  assert [s["bytes_per_image"] for s in jpeg] == sorted(
      s["bytes_per_image"] for s in jpeg)
  assert (out / "rd_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = (out / "results.md").read_text()
  assert "| HECS-B | beta=0.0001 |" in table and "| WebP | q=" in table
  assert "| CR+BQ | k=2 | 1,584.0 |" in table
  assert "## HECS-B against the learned baselines" in table
  details = json.loads((out / "details.json").read_text())
  assert details["num_eval_images"] == 8
  assert details["num_train_images"] == 16  # 8 dev + 8 extra_images
  model_dir = out / "ckpt" / f"hecsb_beta{BETA:g}"
  assert (model_dir / "tables.npz").is_file()


@pytest.mark.slow
def test_bytes_are_the_real_container_and_file_lengths(quick):
  from experiments import split_rd_data
  from experiments import split_rd_eval
  from experiments import split_rd_methods
  from experiments import split_rd_models
  from hecsb_jax import coding
  from hecsb_jax.data import imagenet_folder

  out, cache, results = quick
  config = split_rd.build_config(split_rd.parse_args(_args(out, cache)))
  data_dir = _data_dir()
  holdout = split_rd_data.folder_split(data_dir / "imagenet_samples",
                                      "holdout", 8, cache)
  # The cached crops are the evaluation preprocessing of the files.
  first = imagenet_folder.read_split(data_dir / "imagenet_samples",
                                     "holdout")[0]
  np.testing.assert_array_equal(
      holdout.images[0], imagenet_folder.decode_center_crop(first.path))

  sizes, psnrs = [], []
  for image in holdout.images:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=10, optimize=True)
    sizes.append(len(buf.getvalue()))
    decoded = np.asarray(Image.open(buf).convert("RGB"), np.float64)
    mse = np.mean((decoded - image) ** 2)
    psnrs.append(10 * np.log10(255**2 / mse))
  jpeg10 = next(s for s in results["methods"]["jpeg"]
                if s["setting"] == "q=10")
  assert jpeg10["bytes_per_image"] == np.mean(sizes)
  # Image codecs report the mean PSNR of what they decoded; PNG is
  # lossless and has none.
  assert jpeg10["psnr_db"] == pytest.approx(np.mean(psnrs), rel=1e-9)
  assert "psnr_db" not in results["methods"]["png"][0]
  assert all(5 < s["psnr_db"] < 60
             for s in results["methods"]["neural_codec"])

  teacher = split_rd_models.load_teacher(
      config, split_rd_models.weights_path(config, data_dir, None))
  hecsb = split_rd_methods.METHODS["hecsb"]
  pair = hecsb.build(teacher, config, BETA)
  model_dir = out / "ckpt" / f"hecsb_beta{BETA:g}"
  summary = split_rd_models.load_finished_model(hecsb, pair, config, BETA,
                                                model_dir)
  tables = coding.load_tables(model_dir / "tables.npz")
  assert coding.model_id(tables).hex() == summary["model_id"]
  pair.student.eval()
  x = holdout.images.astype(np.float32)
  # The run's jitted edge function on the run's batch shape: compiled once.
  symbols = np.asarray(split_rd_eval.jit_edge_symbols(
      pair.student, (x - 127.0) / 128.0))
  containers = [coding.compress(symbols[i : i + 1], tables)
                for i in range(len(symbols))]
  hecsb = results["methods"]["hecsb"][0]
  assert hecsb["bytes_per_image"] == np.mean([len(c) for c in containers])
  for c, s in zip(containers[:2], symbols[:2]):
    assert coding.read_header(c).shape == (1, *s.shape)
    np.testing.assert_array_equal(coding.decompress(c, tables)[0], s)


@pytest.mark.slow
def test_rerun_trains_nothing(quick, capsys):
  out, cache, results = quick
  files = _ckpt_files(out)
  again = split_rd.main(_args(out, cache))
  assert _ckpt_files(out) == files  # a trained epoch would write one
  assert again == results
  assert "finished model restored (nothing to train)" in (
      capsys.readouterr().out)
  capsys.readouterr()
  # A subset of the methods scores only those, from the same checkpoints,
  # and the others' scores stay in results.json (same images).
  subset = split_rd.main(_args(out, cache, "--methods", "crbq,png"))
  printed = capsys.readouterr().out
  assert "crbq_k2: finished model restored" in printed
  assert f"hecsb_beta{BETA:g}: finished" not in printed
  assert ("kept from" in printed and "hecsb, svb, neural_codec, jpeg, webp"
          in printed)
  assert subset == results
  on_disk = json.loads((out / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert _ckpt_files(out) == files


@pytest.mark.slow
def test_checkpoints_of_other_settings_are_refused_before_any_work(
    quick, capsys):
  out, cache, _ = quick
  files = _ckpt_files(out)
  # The full config into the quick run's folder: same β, other settings.
  args = [a for a in _args(out, cache) if a != "--quick"]
  err = _one_line_error(capsys, args)
  assert err.startswith("error: ")
  assert "made with other settings" in err and "stage1.epochs" in err
  assert "--overwrite" in err and "another --out" in err
  assert _ckpt_files(out) == files


@pytest.mark.slow
def test_another_stage2_reuses_the_finished_stage1(quick, tmp_path, capsys):
  out, cache, _ = quick
  model = f"hecsb_beta{BETA:g}"
  stage1 = out / "ckpt" / model / "stage1"
  shutil.copytree(stage1, tmp_path / "ckpt" / model / "stage1")
  split_rd.main(_args(tmp_path, cache, "--methods", "hecsb",
                      "--stage2-train", "decoder_tail"))
  printed = capsys.readouterr().out
  assert f"{model} stage1: 0 epochs trained" in printed
  assert f"{model} stage2: 1 epochs trained" in printed
  # Stage 1's checkpoint was read, not rewritten.
  copied = tmp_path / "ckpt" / model / "stage1"
  assert {p.relative_to(copied): p.read_bytes()
          for p in copied.rglob("*") if p.is_file()} == {
              p.relative_to(stage1): p.read_bytes()
              for p in stage1.rglob("*") if p.is_file()}
  # A finished model with other stage-2 settings is still refused.
  err = _one_line_error(capsys, _args(out, cache, "--methods", "hecsb",
                                      "--stage2-train", "decoder_tail"))
  assert "made with other settings" in err and "stage2.train" in err


def test_stage_fingerprints_and_each_methods_stage2():
  from experiments import split_rd_methods

  decoder = split_rd.build_config(split_rd.parse_args(["--data-dir", "d"]))
  tail = split_rd.build_config(split_rd.parse_args(
      ["--data-dir", "d", "--stage2-train", "decoder_tail"]))
  hecsb, svb = split_rd_methods.Hecsb(), split_rd_methods.Svb()
  # --stage2-train sets HECS-B's; the baselines keep what they trained with.
  assert hecsb.stage2_train(decoder) == "decoder"
  assert hecsb.stage2_train(tail) == "decoder_tail"
  assert svb.stage2_train(tail) == svb.stage2_train(decoder) == "decoder"

  def stages(method, config):
    return dict(method.stage_fingerprints(
        config, 1e-4, method.fingerprint(config, 1e-4, "d", "t", 1)))

  a, b = stages(hecsb, tail), stages(hecsb, decoder)
  assert "stage2" not in a["stage1"] and a["stage1"] == b["stage1"]
  assert a["stage1"]["stage1"] == tail.stage1.to_dict()
  assert a["stage2"]["stage2"]["train"] == "decoder_tail"
  assert b["stage2"]["stage2"]["train"] == "decoder"
  assert "stage2_train" not in a["stage2"]["hecsb"]
  assert stages(svb, tail) == stages(svb, decoder)
  codec = split_rd_methods.METHODS["neural_codec"]
  (name, single), = codec.stage_fingerprints(
      tail, 0.01, codec.fingerprint(tail, 0.01, "d", "t", 1))
  assert name == "codec" and {"stage1", "stage2"} <= set(single)


def _small_folder(root: Path, count: int) -> Path:
  """The first `count` holdout images, in the imagenet_samples layout."""
  src = _data_dir() / "imagenet_samples"
  with open(src / "split.csv", newline="") as f:
    rows = [r for r in csv.DictReader(f) if r["split"] == "holdout"][:count]
  names = {r["filename"] for r in rows}
  (root / "images").mkdir(parents=True)
  for name in names:
    shutil.copy(src / "images" / name, root / "images" / name)
  for csv_name in ("labels.csv", "split.csv"):
    with open(src / csv_name, newline="") as f:
      reader = csv.DictReader(f)
      kept = [r for r in reader if r["filename"] in names]
      header = reader.fieldnames
    with open(root / csv_name, "w", newline="") as f:
      writer = csv.DictWriter(f, header)
      writer.writeheader()
      writer.writerows(kept)
  return root


@pytest.mark.slow
def test_eval_only_scores_another_folder_without_training(quick, tmp_path):
  out, cache, _ = quick
  folder = _small_folder(tmp_path / "mine", 3)
  files = _ckpt_files(out)
  results = split_rd.main(_args(out, cache, "--eval-only", "--eval-dir",
                                str(folder), "--methods", "hecsb,png"))
  assert _ckpt_files(out) == files
  dest = out / "eval" / "mine"
  on_disk = json.loads((dest / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  split_rd_report.check_schema(on_disk)
  assert set(on_disk["methods"]) == {"hecsb", "png"}
  assert json.loads((dest / "details.json").read_text())[
      "num_eval_images"] == 3
  assert (dest / "rd_curve.png").is_file() and (dest / "results.md").is_file()


def _one_line_error(capsys, argv) -> str:
  with pytest.raises(SystemExit) as e:
    split_rd.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err and "\n" not in err, err
  return err


def test_psnr_by_hand():
  from experiments import split_rd_eval
  a = np.zeros((2, 4, 4, 3), np.uint8)
  b = a.copy()
  b[0, 0, 0, 0] = 48  # MSE 48² / 48 = 48: PSNR 10 log10(255² / 48)
  psnr = split_rd_eval.psnr_db(a, b)
  assert psnr[0] == pytest.approx(10 * np.log10(255**2 / 48))
  assert psnr[1] == np.inf
  assert split_rd_eval._mean_psnr([psnr]) == {}
  assert split_rd_eval._mean_psnr([psnr[:1]]) == {"psnr_db": psnr[0]}


def test_eval_only_without_a_trained_model_names_it(tmp_path, capsys):
  err = _one_line_error(capsys, _args(tmp_path / "empty", tmp_path / "c",
                                      "--eval-only"))
  assert err.startswith("error: ")
  assert str(tmp_path / "empty" / "ckpt" / f"hecsb_beta{BETA:g}") in err
  assert "no finished model" in err


def test_missing_data_folder_is_one_line_naming_it(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  err = _one_line_error(capsys, [
      "--quick", "--data-dir", str(missing), "--out", str(tmp_path / "o")])
  assert err.startswith("error: ") and str(missing) in err
  assert not (tmp_path / "o").exists()  # nothing was started


@pytest.mark.parametrize("option, value, words", [
    ("--methods", "jpeg,gif", "--methods takes"),
    ("--betas", "1e-4,-1", "--betas needs"),
    ("--betas", "small", "--betas takes"),
    ("--settings", "svb", "--settings takes"),
    ("--settings", "jpeg=5", "--settings takes"),
    ("--settings", "crbq=2.5", "takes int values"),
    ("--settings", "svb=1e-3,1e-3", "distinct positive"),
    ("--measurements", "0", "positive integer"),
    ("--measurements", "forty", "positive integer"),
    # The principal start has 40 directions at block4.
    ("--measurements", "48", "only 40 directions"),
    ("--tune-fold", "2", "it needs --tune"),
    ("--tune-fold", "4", "invalid choice"),  # holdout's remainder
])
def test_bad_option_is_refused_before_any_work(tmp_path, capsys, option,
                                               value, words):
  err = _one_line_error(capsys, [
      "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), option,
      value])
  assert words in err
  assert not (tmp_path / "o").exists()


def test_settings_option_sets_each_methods_values():
  args = split_rd.parse_args(["--data-dir", "d", "--settings", "svb=1e-5,1e-3",
                              "--settings", "crbq=2,8"])
  config = split_rd.build_config(args)
  assert config.svb.betas == (1e-5, 1e-3)
  assert config.crbq.channels == (2, 8)
  assert config.neural_codec.lambdas == split_rd.split_rd_config.CODEC_LAMBDAS


def test_measurements_option_sets_m_and_enters_the_fingerprint():
  from experiments import split_rd_methods

  default = split_rd.build_config(split_rd.parse_args(["--data-dir", "d"]))
  thirty_two = split_rd.build_config(split_rd.parse_args(
      ["--data-dir", "d", "--measurements", "32"]))
  # Above the channels only without the principal start.
  wide = split_rd.build_config(split_rd.parse_args(
      ["--data-dir", "d", "--measurements", "48", "--measurement-init",
       "random"]))
  assert default.hecsb.num_measurements == 40  # chosen on dev
  assert thirty_two.hecsb.num_measurements == 32
  assert wide.hecsb.num_measurements == 48
  hecsb, svb = split_rd_methods.Hecsb(), split_rd_methods.Svb()
  # Another m is another model (its checkpoints are refused, not reused);
  # the baselines' fingerprints do not read HECS-B's section.
  assert (hecsb.fingerprint(default, 1e-4, "d", "t", 1)
          != hecsb.fingerprint(thirty_two, 1e-4, "d", "t", 1))
  assert (svb.fingerprint(default, 1e-4, "d", "t", 1)
          == svb.fingerprint(thirty_two, 1e-4, "d", "t", 1))


@pytest.mark.parametrize("fold, remainder, subdir, split", [
    # Every tuning run before --tune-fold: the same folder and name.
    (None, 3, "tune", "dev-tune"),
    ("3", 3, "tune", "dev-tune"),
    ("0", 0, "tune_fold0", "dev-tune-fold0"),
    ("2", 2, "tune_fold2", "dev-tune-fold2"),
])
def test_tuning_part_of_dev_never_trains_and_holdout_never_enters(
    fold, remainder, subdir, split):
  from experiments import split_rd_data

  args = split_rd.parse_args(["--data-dir", str(_data_dir()), "--tune"]
                             + ([] if fold is None else ["--tune-fold", fold]))
  assert split_rd.tune_subdir(args) == (subdir,)
  config = split_rd.build_config(args)
  assert split_rd_data.tune_split_name(config) == split
  samples = _data_dir() / "imagenet_samples"
  train = split_rd_data.training_lists(config, _data_dir(), tune=True)
  tune = split_rd_data.split_list(samples, "dev", 0,
                                 split_rd_data.tuning_part(config))
  holdout = split_rd_data.split_list(samples, "holdout", 0)
  trained = {e.path for l in train for e in l.examples}
  assert len(tune.examples) == 200
  assert all(e.label % 5 == remainder for e in tune.examples)
  assert not trained & {e.path for e in tune.examples}
  assert not trained & {e.path for e in holdout.examples}
  assert len(trained) == 600 + 3327  # the rest of dev + extra_images


@pytest.mark.parametrize("option, acquisition, trained", [
    (None, "prefix", False),
    ("prefix-finetuned", "prefix", True),
    ("shallow", "shallow", True),
])
def test_acquisition_option_sets_the_encoder_and_what_trains(
    tmp_path, option, acquisition, trained):
  argv = ["--data-dir", str(tmp_path)]
  if option:
    argv += ["--acquisition", option]
  config = split_rd.build_config(split_rd.parse_args(argv))
  assert config.hecsb.acquisition == acquisition
  assert config.hecsb.train_acquisition == trained


def test_measurement_init_option_and_earlier_fingerprints():
  from experiments import split_rd_methods

  plain = split_rd.build_config(split_rd.parse_args(
      ["--data-dir", "d", "--measurement-init", "random"]))
  principal = split_rd.build_config(split_rd.parse_args(["--data-dir", "d"]))
  shallow = split_rd.build_config(split_rd.parse_args(
      ["--data-dir", "d", "--acquisition", "shallow"]))
  assert plain.hecsb.measurement_init == "random"
  assert not plain.hecsb.decoder_skip
  assert principal.hecsb.measurement_init == "principal"
  assert principal.hecsb.decoder_skip
  # A from-scratch encoder has no principal directions: random start.
  assert shallow.hecsb.measurement_init == "random"
  with pytest.raises(SystemExit):
    split_rd.parse_args(["--data-dir", "d", "--acquisition", "shallow",
                         "--measurement-init", "principal"])
  hecsb = split_rd_methods.Hecsb()
  section = hecsb.fingerprint(plain, 1e-4, "data", "teacher", 1)["hecsb"]
  # Keys added after the first runs stay out at the values that reproduce
  # those runs (their checkpoints stay valid) and enter when changed.
  assert not set(split_rd_methods.LATER_KEYS) & set(section)
  section = hecsb.fingerprint(principal, 1e-4, "data", "teacher", 1)["hecsb"]
  assert section["measurement_init"] == "principal"
  assert section["decoder_skip"] is True


def test_an_untrained_shallow_encoder_is_refused():
  from experiments import split_rd_methods
  from hecsb_jax.configs import split_rd as split_rd_config
  from hecsb_jax.models.efficientnet_lite import EfficientNetLite0
  from flax import nnx

  config = split_rd_config.get_config("quick")
  config.hecsb.acquisition = "shallow"
  with pytest.raises(ValueError, match="must be trained"):
    split_rd_methods.METHODS["hecsb"].build(
        EfficientNetLite0(rngs=nnx.Rngs(0)), config, BETA)


@pytest.mark.slow
def test_limits_measure_the_finished_models(quick):
  from experiments import split_rd_limits

  out, cache, _ = quick
  report = split_rd_limits.main([
      "--data-dir", str(_data_dir()), "--out", str(out), "--quick",
      "--images", "4", "--cache-dir", str(cache)])
  (name, sets), = report["models"].items()
  assert name == f"hecsb_beta{BETA:g}"
  assert set(sets) == {"train (dev)", "holdout"}
  for r in sets.values():
    assert r["images"] == 4
    assert 0.0 <= r["top1_rounded"] <= 1.0
    assert r["mse_rounded"] > 0 and r["mse_continuous"] > 0
    assert r["feature_mean_square"] > 0
    floors = r["rank_k_relative_error"]
    # More channels never leave more of the energy out.
    assert list(floors) == [8, 16, 24, 32]
    assert all(a >= b for a, b in zip(floors.values(),
                                      list(floors.values())[1:]))
    # No prior charges less than the symbols' own histogram (up to the
    # histogram's optimism on few images: it is fitted to them).
    assert 0 < r["entropy_bits_per_image"] <= r["prior_bits_per_image"]
  assert (out / "limits.json").is_file() and (out / "limits.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("option, words", [
    # No model of that β was trained.
    (["--betas", "0.5"], "no finished model"),
    # The run's encoder was the frozen prefix: its model is not this one.
    (["--acquisition", "prefix-finetuned"], "made with other settings"),
])
def test_limits_refuse_models_the_run_does_not_hold(quick, capsys, option,
                                                     words):
  from experiments import split_rd_limits

  out, cache, _ = quick
  with pytest.raises(SystemExit):
    split_rd_limits.main([
        "--data-dir", str(_data_dir()), "--out", str(out), "--quick",
        "--images", "4", "--cache-dir", str(cache)] + option)
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err
  assert words in err


@pytest.mark.slow
def test_saved_model_rebuilds_every_finished_model_from_its_folder(quick):
  """`saved_model.load` (what export and the server use) gives the model
  the experiment restores, leaf for leaf, from the folder alone."""
  from flax import nnx
  import jax

  from experiments import split_rd_methods
  from experiments import split_rd_models
  from hecsb_jax.configs import split_rd as split_rd_config
  from hecsb_jax.train import saved_model

  out, _, _ = quick
  config = split_rd_config.get_config("quick")
  config.hecsb.betas = (BETA,)
  teacher = split_rd_models.load_teacher(
      config, split_rd_models.weights_path(config, _data_dir(), None))
  folders = sorted((out / "ckpt").iterdir())
  assert {f.name.split("_")[0] for f in folders} >= {"hecsb", "svb", "crbq"}
  for folder in folders:
    loaded = saved_model.load(folder)
    method = split_rd_methods.METHODS[loaded.method]
    assert method.model_name(loaded.value) == folder.name
    reference = method.build(teacher, config, loaded.value)
    split_rd_models.load_finished_model(method, reference, config,
                                        loaded.value, folder)
    want = jax.tree.leaves(nnx.state(method.saved(reference)))
    got = jax.tree.leaves(nnx.state(loaded.module))
    assert len(got) == len(want)
    for a, b in zip(got, want):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (loaded.tables is None) == (not method.entropy_coded)
  x = np.zeros((1, 224, 224, 3), np.uint8)
  hecsb = saved_model.load(next(f for f in folders
                                if f.name.startswith("hecsb")))
  logits = hecsb.module.logits_from_symbols(
      hecsb.module.edge_symbols(hecsb.normalize(x)))
  assert logits.shape == (1, 1000)


def test_saved_model_names_a_folder_without_a_model(tmp_path):
  from hecsb_jax.train import saved_model

  with pytest.raises(FileNotFoundError, match=str(tmp_path / "model")):
    saved_model.load(tmp_path)


@pytest.mark.slow
def test_principal_start_begins_at_the_prefix_features_pca():
  """`Hecsb.start` with measurement_init=principal: on the teacher's own
  block4 features of a few images, the start's linear path reconstructs
  them as the rank-m PCA does (and the saved model has the path)."""
  from flax import nnx
  import jax.numpy as jnp

  from experiments import split_rd_methods
  from experiments import split_rd_models
  from hecsb_jax.configs import split_rd as split_rd_config
  from hecsb_jax.train import saved_model

  config = split_rd_config.get_config("quick")
  config.hecsb.update(measurement_init="principal", decoder_skip=True,
                      principal_images=4)
  teacher = split_rd_models.load_teacher(
      config, split_rd_models.weights_path(config, _data_dir(), None))
  hecsb = split_rd_methods.METHODS["hecsb"]
  model = hecsb.build(teacher, config, BETA)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, 64, 64, 3)).astype(np.float32)
  asked = []

  def first_images(n):
    asked.append(n)
    return images[:n]

  line = hecsb.start(model, config, first_images)
  assert asked == [4] and "principal directions" in line
  bottleneck = model.student.bottleneck
  a = teacher.features(jnp.asarray(images), until=config.split)
  flat = np.asarray(a).reshape(-1, a.shape[-1])
  u = np.linalg.svd(flat.T @ flat)[0][:, :config.hecsb.num_measurements]
  decoder = bottleneck.decoder
  linear = decoder.skip(decoder.input_scale * bottleneck.measure(None, a))
  np.testing.assert_allclose(np.asarray(linear).reshape(flat.shape),
                             flat @ u @ u.T, atol=1e-3 * np.abs(flat).max())
  # What `saved_model.build` makes of the same section has the path too.
  rebuilt = saved_model.build(
      "hecsb", teacher, split=config.split,
      section=config.hecsb.to_dict(), value=BETA, seed=0,
      channels=config.feature_channels)
  assert rebuilt.bottleneck.decoder.skip is not None
  assert nnx.state(rebuilt.bottleneck.decoder.skip)
