"""One-off: stage-1 checkpoints written before 2026-11-30's change kept the
stage2 section in their fingerprint; the current code leaves it out (stage 1
does not depend on it). Drops it from the saved metadata of the given
stage1/ folders so they can be reused with another --stage2-train."""
import json, sys, pathlib
for folder in sys.argv[1:]:
  for meta in pathlib.Path(folder).glob("*/meta/metadata"):
    m = json.loads(meta.read_text())
    run = m["fingerprint"]["run"]
    assert run["stage"] == "stage1", meta
    if run.pop("stage2", None) is not None:
      meta.write_text(json.dumps(m))
      print("migrated", meta)
