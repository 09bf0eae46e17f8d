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
      assert score["num_images"] == 40
      assert np.isfinite(score["l2_per_image"]) and score["l2_per_image"] > 0
      np.testing.assert_allclose(score["mse_per_pixel"] * 784,
                                 score["l2_per_image"], rtol=1e-6)
    if method == "hecsb":
      # One UAE per weight decay of the grid; the kept one has the lowest
      # validation error, which is reported beside the test error.
      for score in by_m.values():
        assert score["weight_decay"] in (0.0, 1.0)
        assert np.isfinite(score["val_l2_per_image"])
    if method != "lasso":
      assert by_m["25"]["l2_per_image"] < 60, method
      assert by_m["25"]["l2_per_image"] < by_m["2"]["l2_per_image"], method
  table = (out / "results.md").read_text()
  assert "| 25 |" in table and "HECS-B" in table
  for png in ("error_vs_m.png", "reconstructions.png"):
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_resumes_from_checkpoints(tmp_path, shared_data):
  data_dir = shared_data("mnist").parent
  args = ["--quick", "--dataset", "mnist", "--m", "2", "--epochs", "1",
          "--data-dir", str(data_dir), "--out", str(tmp_path),
          "--no-progress", "--eval-images", "20"]
  first = mnist_cs.main(args)
  second = mnist_cs.main(args)
  # Training resumed from finished checkpoints: the learned methods give
  # exactly the same reconstructions, hence the same errors.
  for method in ("hecsb", "pca", "lasso"):
    assert first["mnist"][method]["2"]["l2_per_image"] == (
        second["mnist"][method]["2"]["l2_per_image"])


def test_bad_measurement_list_is_a_clear_error(capsys):
  with pytest.raises(SystemExit):
    mnist_cs.parse_args(["--m", "two", "--data-dir", "x"])
  assert "--m takes integers" in capsys.readouterr().err


def test_missing_data_dir_names_the_path(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match="nowhere"):
    mnist_cs.main(["--quick", "--dataset", "mnist", "--data-dir",
                   str(missing), "--out", str(tmp_path / "o"),
                   "--no-progress"])
