"""The rate-accuracy report's comparison against the codecs."""

import math

import pytest

from experiments import split_rd_report as report


def _scores(points):
  return [{"setting": f"s{i}", "bytes_per_image": b, "top1": a, "top5": a}
          for i, (b, a) in enumerate(points)]


def test_bytes_for_top1_interpolates_in_log_bytes():
  scores = _scores([(1000, 0.5), (4000, 0.7)])
  # Halfway in accuracy is the geometric mean of the bytes.
  assert report.bytes_for_top1(scores, 0.6) == pytest.approx(2000)
  assert report.bytes_for_top1(scores, 0.5) == pytest.approx(1000)
  assert report.bytes_for_top1(scores, 0.3) == pytest.approx(1000)
  assert report.bytes_for_top1(scores, 0.71) is None


def test_bytes_for_top1_uses_the_upper_envelope():
  # The 3000-byte point scores worse than the 2000-byte one: a sender
  # would not pick it, so 0.65 is reached between 2000 and 5000 bytes.
  scores = _scores([(1000, 0.5), (2000, 0.6), (3000, 0.55), (5000, 0.7)])
  expected = math.exp((math.log(2000) + math.log(5000)) / 2)
  assert report.bytes_for_top1(scores, 0.65) == pytest.approx(expected)


def _results(hecsb):
  return {"teacher": {"top1": 0.9, "top5": 0.98}, "split": "holdout",
          "methods": {"hecsb": _scores(hecsb),
                      "jpeg": _scores([(2000, 0.6), (16000, 0.9)]),
                      "webp": _scores([(1000, 0.6), (8000, 0.9)])}}


def test_the_bar_is_met_only_at_half_the_best_codecs_bytes():
  # WebP reaches 0.88 between 1000 and 8000 bytes, JPEG later: WebP is
  # the reference; its bytes at 0.88 follow from the log interpolation.
  webp = 1000 * 8 ** ((0.88 - 0.6) / 0.3)
  met = report.comparison_markdown(_results([(webp * 0.4, 0.89)]))
  assert any(line.startswith("Met:") and "WebP" in line for line in met)
  not_met = report.comparison_markdown(_results([(webp * 0.6, 0.89)]))
  assert any(line.startswith("Not met:") for line in not_met)


def test_unreached_accuracy_is_said_not_hidden():
  lines = report.comparison_markdown(_results([(500, 0.7), (900, 0.8)]))
  assert any("does not reach 0.880" in line and "0.800" in line
             for line in lines)
  assert any("| s0 | 500.0 | 0.700 | 2,000.0 (WebP) | 0.25 |" in line
             for line in lines)


def test_baseline_ratios_at_three_levels_both_reach():
  results = _results([(1000, 0.6), (4000, 0.8)])
  results["methods"]["svb"] = _scores([(2000, 0.7), (8000, 0.9)])
  results["methods"]["crbq"] = _scores([(500, 0.2), (900, 0.5)])
  rows = report.baseline_ratios(results, "svb")
  # Both reach 0.7 ... 0.8: levels 0.7, 0.75, 0.8.
  assert [a for a, _, _ in rows] == pytest.approx([0.7, 0.75, 0.8])
  ours, theirs = rows[0][1], rows[0][2]
  assert ours == pytest.approx(2000)  # halfway from 1000 to 4000 in log
  assert theirs == pytest.approx(2000)
  assert rows[-1][1] == pytest.approx(4000)
  assert rows[-1][2] == pytest.approx(4000)  # halfway to 8000 in log
  assert report.baseline_ratios(results, "crbq") == []  # never both
  table = "\n".join(report.baselines_markdown(results))
  assert "| SVB | 0.700 | 2,000.0 | 2,000.0 | 1.00 |" in table
  assert "| CR+BQ | – (no top-1 both reach) |" in table


def _run(methods, top1=0.9, n=200):
  results = {"teacher": {"top1": top1, "top5": 0.98}, "split": "holdout",
             "methods": {m: [{"setting": "s", "bytes_per_image": 10.0,
                              "top1": 0.5, "top5": 0.6}] for m in methods}}
  details = {"num_eval_images": n,
             "models": {f"{m}_x1": {"epochs": 1} for m in methods}}
  return results, details


def _write(folder, results, details):
  import json
  (folder / "results.json").write_text(json.dumps(results))
  (folder / "details.json").write_text(json.dumps(details))


def test_merge_keeps_earlier_methods_this_run_did_not_score(tmp_path):
  earlier, earlier_details = _run(["hecsb", "jpeg", "svb"])
  earlier["methods"]["svb"][0]["top1"] = 0.1  # replaced by this run's
  _write(tmp_path, earlier, earlier_details)
  results, details = _run(["svb"])
  kept = report.merge_earlier(results, details, tmp_path)
  assert kept == ["hecsb", "jpeg"]
  assert list(results["methods"]) == ["hecsb", "svb", "jpeg"]
  assert results["methods"]["svb"][0]["top1"] == 0.5
  assert set(details["models"]) == {"hecsb_x1", "jpeg_x1", "svb_x1"}
  report.check_schema(results)


@pytest.mark.parametrize("change", ["teacher", "images", "split"])
def test_merge_ignores_a_run_on_other_images(tmp_path, change):
  earlier, earlier_details = _run(["hecsb"])
  if change == "teacher":
    earlier["teacher"]["top1"] = 0.5
  elif change == "images":
    earlier_details["num_eval_images"] = 8
  else:
    earlier["split"] = "tune"
  _write(tmp_path, earlier, earlier_details)
  results, details = _run(["svb"])
  assert report.merge_earlier(results, details, tmp_path) == []
  assert list(results["methods"]) == ["svb"]


def test_merge_without_an_earlier_run_keeps_nothing(tmp_path):
  results, details = _run(["svb"])
  assert report.merge_earlier(results, details, tmp_path) == []


def test_schema_allows_psnr_on_image_methods_only():
  results = _results([(1000, 0.8)])
  results["methods"]["jpeg"][0]["psnr_db"] = 30.5
  report.check_schema(results)
  assert "| 30.50 |" in report.results_markdown(results)
  results["methods"]["hecsb"][0]["psnr_db"] = 30.5
  with pytest.raises(ValueError, match="hecsb: keys"):
    report.check_schema(results)
  del results["methods"]["hecsb"][0]["psnr_db"]
  results["methods"]["webp"][0]["ssim"] = 0.9
  with pytest.raises(ValueError, match="webp: keys"):
    report.check_schema(results)
