"""evaluate() end to end on synthetic MMSAR folders with a fake model whose answers are known, and the
results.json / report.md / PNG outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_synth import FakeModel, write_build, write_imagefolder
from PIL import Image

from sarclip_train.eval import evaluate, parse_tasks
from sarclip_train.eval.report import compare


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return write_build(root / "build"), write_imagefolder(root / "folder")


@pytest.fixture(scope="module")
def run(build, tmp_path_factory):
    data, folder = build
    out = tmp_path_factory.mktemp("out")
    fake = FakeModel()
    res = evaluate(fake.eval_model(), data, None, out, imagefolders=[folder], fewshot_ks=(1, 4),
                   fewshot_seeds=(0, 1))
    return res, out, fake


def test_results_json_keys_and_values(run):
    res, out, _ = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["model"] == {"name": "fake", "kind": "fake"}
    assert on_disk["seed"] == 0 and on_disk["tasks"] == list(parse_tasks(None))
    r = on_disk["results"]
    ret = r["retrieval"]["metrics"]
    for k in (1, 5, 10):
        assert ret[f"image_retrieval_recall@{k}"] == 1.0 and ret[f"text_retrieval_recall@{k}"] == 1.0
    # 18 scenes x 2 captions; repeats of the templated ones make the duplicate rate.
    assert ret["num_captions"] == 36 and ret["duplicate_rate"] == pytest.approx(1 - ret["num_texts"] / 36)
    assert r["zeroshot"]["chips"]["metrics"]["acc1"] == 1.0
    assert r["zeroshot"]["imagefolder:folder"]["metrics"]["mean_per_class_recall"] == 1.0
    assert set(r["fewshot"]["chips"]["metrics"]) == {"k=1", "k=4"}
    assert r["linear"]["chips"]["metrics"]["lp_acc1"] == 1.0
    cnt = r["counting"]["metrics"]
    assert cnt["num_items"] == 20
    for variant in ("words", "digits"):
        assert cnt[variant]["acc1"] == 1.0 and cnt[variant]["mae"] == 0.0
        assert np.trace(np.array(cnt[variant]["confusion"])) == 20
    assert cnt["regression_probe"]["acc1"] == 1.0
    # The ImageFolder has no train split: few-shot and linear are skipped there, with the reason.
    assert "few-shot needs train" in on_disk["skipped"]["fewshot/imagefolder:folder"]
    assert on_disk == json.loads(json.dumps(res))


def test_report_md_table_and_plots(run):
    _, out, _ = run
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    row = next(line for line in md.splitlines() if line.startswith("| fake"))
    names = [c.strip() for c in header.split("|")[1:-1]]
    cells = dict(zip(names, [c.strip() for c in row.split("|")[1:-1]], strict=True))
    assert cells["Retr. mean R"] == "1.0000" and cells["Count top-1 (digits)"] == "1.0000"
    assert cells["ZS top-1 (imagefolder:folder)"] == "1.0000"
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["counting_confusion_digits.png", "counting_confusion_words.png", "counting_pred_vs_true.png",
                    "fewshot_chips.png", "retrieval_recall.png", "zeroshot_chips.png", "zeroshot_imagefolder_folder.png"]
    for name in pngs:
        assert f"(plots/{name})" in md
        with Image.open(out / "plots" / name) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100


def test_cache_reused_and_outputs_deterministic(run, build, tmp_path):
    res, out, _ = run
    data, folder = build
    fake = FakeModel()
    again = evaluate(fake.eval_model(), data, None, tmp_path, imagefolders=[folder], fewshot_ks=(1, 4),
                     fewshot_seeds=(0, 1), cache_dir=out / ".feature-cache")
    assert fake.image_calls == 0  # every image feature came from the cache
    assert (tmp_path / "results.json").read_bytes() == (out / "results.json").read_bytes()
    assert again == res
    for p in (out / "plots").glob("*.png"):
        assert (tmp_path / "plots" / p.name).read_bytes() == p.read_bytes()


def test_missing_data_is_skipped_with_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    res = evaluate(FakeModel().eval_model(), tmp_path / "empty", "retrieval,counting", None)
    assert res["results"] == {}
    assert "no test shard folder" in res["skipped"]["retrieval"]
    assert "_index.json" in res["skipped"]["counting"]
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("retrieval,bogus")


def test_compare_two_models():
    a = {"model": {"name": "sarclip"}, "results": {"retrieval": {"metrics": {"mean_recall": 0.5}}}}
    b = {"model": {"name": "clip"}, "results": {"retrieval": {"metrics": {"mean_recall": 0.25}},
                                                "zeroshot": {"chips": {"metrics": {"acc1": 0.75}}}}}
    lines = compare([a, b]).splitlines()
    assert lines[0] == "| Model | Retr. mean R | ZS top-1 |"
    assert lines[2] == "| sarclip | 0.5000 | - |"
    assert lines[3] == "| clip | 0.2500 | 0.7500 |"


def test_bad_image_row_is_logged_and_left_out(tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from eval_synth import png

    from d2c.schema import SCHEMA

    rows = [{"key": "s/good", "image": {"bytes": png(2, 2), "path": None}, "captions": ["There are two ships."]},
            {"key": "s/bad", "image": {"bytes": b"broken", "path": None}, "captions": ["x"]},
            {"key": "s/escape", "image": {"bytes": None, "path": "../../etc/passwd"}, "captions": ["y"]}]
    (tmp_path / "test").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "test" / "s-00000.parquet")
    res = evaluate(FakeModel().eval_model(), tmp_path, "retrieval", None)
    m = res["results"]["retrieval"]["metrics"]
    assert m["num_images"] == 1 and m["num_texts"] == 1 and m["text_retrieval_recall@1"] == 1.0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("s/bad" in e and "s-00000.parquet" in e for e in errors)
    assert any("s/escape" in e for e in errors)
