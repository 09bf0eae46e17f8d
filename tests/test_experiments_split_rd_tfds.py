"""End to end at the paper's configuration on tfds mock data:
`split_rd --backbone resnet50` (ResNet-50 cut after layer2, random
weights in torchvision's layout) trains from the tfds `imagenet2012` train
split and scores every method on the streamed validation split, with the
config shrunk by ``get_config("paper_smoke")``."""

import json

from flax import nnx
import numpy as np
import pytest

from experiments import split_rd
from experiments import split_rd_report
from hecsb_jax.configs import split_rd as split_rd_config


@pytest.fixture
def resnet50_weights(tmp_path):
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  from hecsb_jax.models import resnet
  from hecsb_jax.models import resnet_import
  model = resnet.resnet50(rngs=nnx.Rngs(0))
  path = tmp_path / "resnet50.safetensors"
  safetensors_numpy.save_file(resnet_import.export_state_dict(model),
                              str(path))
  return path


@pytest.fixture
def paper_smoke(monkeypatch):
  """The command's "paper" config, shrunk to seconds."""
  get_config = split_rd_config.get_config
  monkeypatch.setattr(
      split_rd_config, "get_config",
      lambda arg=None: get_config("paper_smoke" if arg == "paper" else arg))


@pytest.mark.slow
def test_paper_config_trains_and_scores_on_tfds_imagenet2012(
    tmp_path, resnet50_weights, paper_smoke, capsys):
  tfds = pytest.importorskip("tensorflow_datasets")
  out = tmp_path / "run"
  args = ["--backbone", "resnet50", "--weights", str(resnet50_weights),
          "--data-dir", str(tmp_path), "--out", str(out), "--cache-dir",
          str(tmp_path / "cache"), "--no-progress"]
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    results = split_rd.main(args)
  on_disk = json.loads((out / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  split_rd_report.check_schema(on_disk)
  assert on_disk["split"] == "validation[:2]"
  assert set(on_disk["methods"]) == {"hecsb", "svb", "crbq", "neural_codec",
                                     "jpeg", "webp", "png"}
  assert [s["setting"] for s in on_disk["methods"]["hecsb"]] == [
      "beta=0.0001"]
  # Every learned baseline trains on the same tfds stream, one setting
  # each in the smoke config.
  for method in ("svb", "crbq", "neural_codec"):
    assert len(on_disk["methods"][method]) == 1
  for scores in on_disk["methods"].values():
    for s in scores:
      assert s["bytes_per_image"] > 0 and 0 <= s["top1"] <= s["top5"] <= 1
  # Lossless PNG hands the teacher its own input.
  png = on_disk["methods"]["png"][0]
  assert (png["top1"], png["top5"]) == (on_disk["teacher"]["top1"],
                                        on_disk["teacher"]["top5"])
  details = json.loads((out / "details.json").read_text())
  assert details["num_eval_images"] == 2
  assert details["num_train_images"] == 4
  assert details["config"]["backbone"] == "resnet50"
  assert details["config"]["split"] == "layer2"
  history = details["models"]["hecsb_beta0.0001"]
  assert "stage1" in history and "stage2" in history
  assert (out / "ckpt" / "hecsb_beta0.0001" / "tables.npz").is_file()
  assert (out / "rd_curve.png").is_file() and (out / "results.md").is_file()
  assert "tfds imagenet2012" in (out / "results.md").read_text()


def test_resnet50_without_prepared_imagenet2012_is_one_line(
    tmp_path, resnet50_weights, capsys):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(SystemExit) as e:
    split_rd.main(["--backbone", "resnet50", "--weights",
                   str(resnet50_weights), "--data-dir", str(tmp_path),
                   "--out", str(tmp_path / "o")])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err
  assert f"{tmp_path}: no prepared tfds imagenet2012" in err
  assert "prepare_imagenet2012" in err


@pytest.mark.parametrize("extra, words", [
    (["--tune"], "--tune and --eval-dir take folders"),
    (["--coordinator", "h:1"], "go with --distributed"),
    (["--distributed", "--coordinator", "h:1"], "go together"),
    (["--distributed", "--coordinator", "h:1", "--num-processes", "2",
      "--process-id", "2"], "--process-id must be in 0 .. 1"),
])
def test_bad_paper_scale_options_are_refused(tmp_path, capsys, extra, words):
  with pytest.raises(SystemExit) as e:
    split_rd.parse_args(["--backbone", "resnet50", "--weights", "w",
                         "--data-dir", str(tmp_path), *extra])
  assert e.value.code == 2
  assert words in capsys.readouterr().err
