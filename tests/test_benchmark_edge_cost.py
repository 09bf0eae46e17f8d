"""benchmarks.edge_cost: a row per method, its JSON and its plot.

The benchmark pins its process to one core when imported, so it runs in a
subprocess (a --quick run: about 40 s on a loaded 2-core machine, compile
time mostly). Its --data-dir is an empty folder: random teacher weights and
a synthetic image, the same costs, no shared data needed.
"""

import json
from pathlib import Path
import subprocess
import sys

import pytest

from benchmarks import edge_report
from experiments.split_rd_methods import METHODS
from hecsb_jax.configs import split_rd as split_rd_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def _score(setting: str, num_bytes: float) -> dict:
  return {"setting": setting, "bytes_per_image": num_bytes, "top1": 0.5,
          "top5": 0.8}


def _results() -> dict:
  """A results.json with every method, and a WebP quality no config has."""
  config = split_rd_config.get_config("quick")
  methods = {name: [_score(m.setting(v), 1000.0 * (i + 1))
                    for i, v in enumerate(m.values(config))]
             for name, m in METHODS.items()}
  methods["jpeg"] = [_score("q=10", 2000.0), _score("q=50", 6000.0)]
  methods["webp"] = [_score("q=33", 3000.0)]
  methods["png"] = [_score("lossless", 90000.0)]
  return {"teacher": {"top1": 0.75, "top5": 0.9}, "split": "holdout",
          "methods": methods}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("edge_cost")
  (tmp / "results.json").write_text(json.dumps(_results()))
  (tmp / "data").mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.edge_cost", "--quick",
       "--config", "quick", "--data-dir", str(tmp / "data"),
       "--json", str(tmp / "rows.json"),
       "--results", str(tmp / "results.json"),
       "--plot", str(tmp / "plot.png")],
      capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return tmp, proc.stdout


def _rows(tmp: Path) -> list[dict]:
  return json.loads((tmp / "rows.json").read_text())["rows"]


@pytest.mark.slow
def test_every_method_has_a_measured_row(run):
  rows = {r["method"]: r for r in _rows(run[0]) if r["method"] in METHODS}
  assert set(rows) == set(METHODS)
  for name, row in rows.items():
    assert row["params"] > 0, name
    assert row["edge"]["flops"] > 0 and row["edge"]["ms"] > 0, name
    assert row["edge"]["memory"]["total_bytes"] > 0, name
    assert row["coder_ms"] > 0 and row["bytes"] > 0, name
    assert row["server"]["fn_ms"] > 0, name
    assert row["server"]["ms"] > row["server"]["fn_ms"], name


@pytest.mark.slow
def test_edge_counts_only_what_runs_there(run):
  rows = _rows(run[0])
  by_name = {r["name"]: r for r in rows}
  whole = by_name[edge_report.WHOLE]
  prefix = next(r for r in rows if r["name"].startswith("teacher prefix"))
  hecsb = next(r for r in rows if r["method"] == "hecsb")
  config = split_rd_config.get_config("quick")
  # The prefix head: the teacher's layers up to the split and W, not the
  # whole copy of the teacher that a TeacherPrefix holds.
  assert hecsb["params"] - prefix["params"] == (
      config.feature_channels * config.hecsb.num_measurements)
  # jit drops the unused layers' parameters from the compiled call.
  assert (hecsb["edge"]["memory"]["argument_bytes"]
          < whole["edge"]["memory"]["argument_bytes"] / 4)


@pytest.mark.slow
def test_codec_rows_json_and_plot(run):
  tmp, stdout = run
  codecs = {(r["method"], r["setting"]) for r in _rows(tmp)
            if r["method"] in edge_report.IMAGE_CODECS}
  # results.json's WebP q=33 is measured too, beside the config's settings.
  assert {("jpeg", "q=10"), ("webp", "q=33"), ("png", "lossless")} <= codecs
  assert (tmp / "plot.png").stat().st_size > 0
  assert "left out" not in stdout


def test_points_take_edge_plus_coder_time_and_report_missing():
  rows = [
      {"name": "x", "method": "hecsb", "setting": "beta=1",
       "edge": {"ms": 2.0}, "coder_ms": 0.5},
      {"name": "y", "method": "jpeg", "setting": "q=10",
       "edge": {"ms": 1.0}, "coder_ms": None},
  ]
  results = {"methods": {
      "hecsb": [_score("beta=1", 10.0), _score("beta=2", 5.0)],
      "jpeg": [_score("q=10", 20.0), _score("q=90", 40.0)]}}
  found, missing = edge_report.points(results, rows)
  assert found == {"hecsb": [(2.5, 10.0), (2.5, 5.0)], "jpeg": [(1.0, 20.0)]}
  assert missing == [("jpeg", "q=90")]
