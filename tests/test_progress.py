"""The shared progress helper (d2c.progress): totals and ETA, one log line every few seconds off a TTY,
used by convert (total once planned) and mmsar build."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from d2c.options import ConvertOptions
from d2c.progress import Progress, track

sys.path.insert(0, str(Path(__file__).parent))
from test_convert import make_coco, make_dota  # noqa: E402


def test_log_lines_carry_total_rate_and_eta(caplog, monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 6.0, 12.0, 12.0])
    monkeypatch.setattr("d2c.progress.time.monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="progress"), Progress("staging", 10, enabled="log", every=5,
                                                                   unit="sources") as p:
        p.advance()  # t=1: under 5 s since the start, no line
        p.advance()  # t=2
        p.advance(info="1 reject")  # t=6: a line
        p.update(10)  # t=12: a line
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "staging: 3/10 sources (30%), 0.5/s, elapsed 0:00:06, ETA 0:00:14; 1 reject"
    assert lines[1].startswith("staging: 10/10 sources (100%)") and lines[-1].endswith("(done)")
    assert len(lines) == 3


def test_unknown_total_and_off(caplog):
    with caplog.at_level(logging.INFO, logger="progress"):
        assert list(track(iter(range(3)), "reading", enabled="log")) == [0, 1, 2]
        assert list(track([1, 2], "quiet", enabled=False)) == [1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("reading: 3, ") and lines[0].endswith("(done)")
    assert "ETA" not in lines[0]


def test_convert_reports_the_planned_total(tmp_path, caplog):
    from d2c.convert import convert

    ann = make_coco(tmp_path / "ds", n=12)
    with caplog.at_level(logging.INFO, logger="d2c.convert"):
        convert(ann, tmp_path / "s", ConvertOptions(format="coco", progress="log"))
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("converting:")]
    assert done and done[-1].startswith("converting: 12/12 units (100%)") and "rejects" in done[-1]


def test_build_progress_lines(tmp_path, caplog):
    from mmsar.build import build
    from mmsar.synth import generate

    generate(tmp_path / "syn", images=4, size=96, formats=("dota",), max_objects=3, seed=1)
    (tmp_path / "m.toml").write_text('[[sources]]\nname = "syn"\nformat = "dota"\ninput = "syn"\n')
    with caplog.at_level(logging.INFO, logger="mmsar.build"):
        build(tmp_path / "m.toml", workers=1, progress="log")
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("staging: 4/4 scenes (100%)") for m in lines)  # tasks of N scenes: the total in scenes
    assert any(m.startswith("writing folders: ") and "(done)" in m for m in lines)


def test_streamed_convert_has_the_planned_total_too(tmp_path, caplog):
    """A DOTA tree read in order (one worker, annotation-only): the plan's file count is the total."""
    from d2c.convert import convert

    make_dota(tmp_path / "ds", n=6)
    with caplog.at_level(logging.INFO, logger="d2c.convert"):
        convert(tmp_path / "ds", tmp_path / "s", ConvertOptions(format="dota", progress="log"))
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("converting:")]
    assert done and done[-1].startswith("converting: 7/7 units (100%)")  # 6 label files + GHOST.txt


@pytest.mark.parametrize("mode", ["embed", "tile", "resume"])
def test_streamed_embed_tile_and_resume_runs_have_the_total(tmp_path, caplog, mode):
    """One worker that must read in order (images embedded, scenes tiled, a resumed run): the total is the
    plan's unit count all the same."""
    from d2c.convert import convert

    make_dota(tmp_path / "ds", n=6)
    kw = {"images_mode": "embed"} if mode == "embed" else {"tile": 64, "overlap": 8} if mode == "tile" else {}
    if mode == "resume":
        convert(tmp_path / "ds", tmp_path / "s", ConvertOptions(format="dota", shard_rows=2, progress=False))
        kw = {"resume": True, "shard_rows": 2}
    with caplog.at_level(logging.INFO, logger="d2c.convert"):
        convert(tmp_path / "ds", tmp_path / "s", ConvertOptions(format="dota", progress="log", **kw))
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("converting:")]
    assert done and "/7 units" in done[-1], done


def test_nested_rich_bars_share_one_display():
    import d2c.progress as P

    with Progress("outer", 2, enabled=True) as outer:
        for _ in range(2):
            assert list(track(range(3), "inner", enabled=True)) == [0, 1, 2]
            assert P._LIVE is outer._bar  # the inner bar was a line of the same display
            outer.advance()
    assert P._LIVE is None and P._USERS == 0


def test_eval_image_encoding_reports_its_total(caplog):
    """Evaluation and embed encode images through image_features: a progress line with the set's total."""
    import numpy as np

    from sarclip_train.eval.datasets import ImageSource
    from sarclip_train.eval.features import EvalModel, FeatureCache, image_features

    model = EvalModel("toy", lambda imgs: np.ones((len(imgs), 4), np.float32), lambda t: None, None, {})
    src = ImageSource("chips/test", [f"k{i}" for i in range(10)], lambda i: np.zeros((4, 4), np.uint8), "fp")
    with caplog.at_level(logging.INFO, logger="sarclip_train.eval.features"):
        ids, emb = image_features(model, src, FeatureCache(None), batch_size=4)
    assert len(ids) == 10 and emb.shape == (10, 4)
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("toy: chips/test: 10/10 images (100%)") and m.endswith("(done)") for m in lines)
