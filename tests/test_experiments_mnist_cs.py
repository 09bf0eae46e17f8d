"""End-to-end: `python -m experiments.mnist_cs --quick` on a small subset."""

import json

import numpy as np
import pytest

from experiments import mnist_cs


@pytest.mark.slow
def test_quick_run_writes_every_result(tmp_path, shared_data):
  data_dir = shared_data("mnist").parent
  out = tmp_path / "run"
  results = mnist_cs.main([
      "--quick", "--dataset", "mnist", "--m", "2,25",
      "--data-dir", str(data_dir), "--out", str(out), "--no-progress",
      "--eval-images", "40",
  ])
  on_disk = json.loads((out / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert set(on_disk) == {"mnist"}
  assert set(on_disk["mnist"]) == {"hecsb", "lasso", "csgm_vae", "pca"}
  # The all-zero guess costs sum(x^2), about 80 per MNIST image: the learned
  # methods must do far better at m = 25. (LASSO in the pixel basis is about
  # as bad as that guess for m <= 25, as in Bora et al. 2017; its
  # solver is checked against scikit-learn in test_cs_lasso.py.)
  for method, by_m in on_disk["mnist"].items():
    assert set(by_m) == {"2", "25"}, method
    for m, score in by_m.items():
      # The quick config scores its first 1,000 test images; CSGM only the
      # fixed subset, which every method is also scored on.
      if method == "csgm_vae":
        assert (score["eval_set"], score["num_images"]) == ("subset", 40)
        assert score["subset_l2_per_image"] == score["l2_per_image"]
      else:
        assert (score["eval_set"], score["num_images"]) == ("full", 1000)
      assert score["subset_num_images"] == 40
      assert np.isfinite(score["l2_per_image"]) and score["l2_per_image"] > 0
      np.testing.assert_allclose(score["mse_per_pixel"] * 784,
                                 score["l2_per_image"], rtol=1e-6)
    if method == "hecsb":
      # One UAE per weight decay of the grid; the kept one has the lowest
      # validation error, which is reported beside the test error.
      for score in by_m.values():
        assert score["weight_decay"] in (0.0, 0.5)
        assert np.isfinite(score["val_l2_per_image"])
    if method != "lasso":
      assert by_m["25"]["l2_per_image"] < 60, method
      assert by_m["25"]["l2_per_image"] < by_m["2"]["l2_per_image"], method
  table = (out / "results.md").read_text()
  assert "| 25 |" in table and "HECS-B" in table
  assert "the whole test set (1000 images" in table
  assert "the fixed subset (40 test images" in table
  for png in ("error_vs_m.png", "reconstructions.png"):
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _ckpt_files(out):
  return {p: p.stat().st_mtime_ns for p in (out / "ckpt").rglob("*")
          if p.is_file()}


@pytest.mark.slow
def test_rerun_trains_nothing_and_a_changed_setting_is_refused(
    tmp_path, shared_data, capsys):
  data_dir = shared_data("mnist").parent
  args = ["--quick", "--dataset", "mnist", "--m", "2", "--epochs", "1",
          "--data-dir", str(data_dir), "--out", str(tmp_path),
          "--no-progress", "--eval-images", "20"]
  first = mnist_cs.main(args)
  files = _ckpt_files(tmp_path)
  assert any("uae_m2" in str(p) for p in files)
  second = mnist_cs.main(args)
  # Every model came from its finished checkpoint: no file was rewritten
  # (a trained epoch writes one), and the reconstructions are the same.
  assert _ckpt_files(tmp_path) == files
  for method in ("hecsb", "pca", "lasso", "csgm_vae"):
    assert first["mnist"][method]["2"]["l2_per_image"] == (
        second["mnist"][method]["2"]["l2_per_image"])
  capsys.readouterr()

  # The same --out with another setting: refused, nothing overwritten.
  with pytest.raises(SystemExit) as e:
    mnist_cs.main(args[:6] + ["2"] + args[7:])  # --epochs 2
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err
  assert "epochs: 1 in the checkpoint, 2 now" in err
  assert "--overwrite" in err and "another --out" in err
  assert _ckpt_files(tmp_path) == files

  # --overwrite retrains from scratch.
  mnist_cs.main(args[:6] + ["2"] + args[7:] + ["--overwrite"])
  assert _ckpt_files(tmp_path) != files


def test_bad_measurement_list_is_a_clear_error(capsys):
  with pytest.raises(SystemExit):
    mnist_cs.parse_args(["--m", "two", "--data-dir", "x"])
  assert "--m takes integers" in capsys.readouterr().err


def test_impossible_m_is_refused_before_any_work(capsys):
  with pytest.raises(SystemExit) as e:
    mnist_cs.parse_args(["--m", "2,1000", "--data-dir", "x"])
  assert e.value.code == 2
  assert "1000 is more measurements than the 784 pixels" in (
      capsys.readouterr().err)


def test_missing_data_dir_is_one_line_naming_the_path(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  with pytest.raises(SystemExit) as e:
    mnist_cs.main(["--quick", "--dataset", "mnist", "--data-dir",
                   str(missing), "--out", str(tmp_path / "o"),
                   "--no-progress"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "nowhere" in err
  assert "Traceback" not in err and "\n" not in err
  assert not (tmp_path / "o").exists()  # nothing was started
