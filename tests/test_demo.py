"""The smoke profile of ``make demo``: the whole pipeline on a dozen scenes, so the demo cannot rot."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sarclip_train.demo import main, run_demo


def test_demo_smoke_profile_writes_a_comparison_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` passes it
    report = run_demo(Path("demo"), "smoke", real_samples=None, workers=1)
    text = report.read_text(encoding="utf-8")
    assert report == tmp_path / "demo" / "report.md"
    # one table row per trained model, each with numeric cells
    rows = [line for line in text.splitlines() if line.startswith("| sarclip-anyreader") or
            line.startswith("| clip-plain-resize")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        # a number, marked ▼ where it does not beat its baselines (the smoke profile's tiny test split)
        assert cells and all(re.fullmatch(r"-?\d+\.\d+( ▼)?|—|-|n/a", c) for c in cells), row
    for name in ("sarclip-anyreader", "clip-plain-resize"):
        results = json.loads((tmp_path / "demo" / "eval" / name / "results.json").read_text())
        assert set(results["tasks"]) == {"retrieval", "zeroshot", "fewshot", "linear", "counting"}
        assert not results["skipped"], results["skipped"]
        assert (tmp_path / "demo" / "runs" / name / "checkpoints" / "final.pt").exists()
    timings = json.loads((tmp_path / "demo" / "timings.json").read_text())
    assert {"synth", "build"} <= set(timings)


def test_demo_cli_rejects_unknown_profile(capsys):
    try:
        main(["--profile", "huge"])
    except SystemExit as e:
        assert e.code == 2
    assert "invalid choice" in capsys.readouterr().err
