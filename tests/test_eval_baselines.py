"""Baselines beside every metric: exact values on tiny hand-made inputs, the below-baseline marker, and the
report's plots (loss curve, few-shot vs k, retrieval bars with baselines) with real pixel content."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_synth import FakeModel, write_build
from PIL import Image

from sarclip_train.eval import baselines as B
from sarclip_train.eval import evaluate
from sarclip_train.eval.report import BELOW, compare, write_comparison


def test_popularity_ranker_exact_on_tiny_gallery():
    # Image 0 and 1 share "a ship." (test frequency 2); image 2 has "a bridge." only.
    captions = [["a ship."], ["a ship."], ["a bridge."]]
    train = [["a ship."]] * 3 + [["a bridge."]]
    base = B.retrieval_baselines(captions, train)
    pop = base["popularity"]
    # Text side: "a ship." (3) ranks above "a bridge." (1) for every image query: images 0, 1 hit at 1,
    # image 2 needs 2 places.
    assert pop["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert pop["text_retrieval_recall@5"] == 1.0
    # Image side: images 0, 1 (score 3) tied above image 2 (score 1). "a ship." finds one of its two
    # positives first; "a bridge." sits behind two negatives.
    assert pop["image_retrieval_recall@1"] == pytest.approx(0.5)
    # Random: every candidate tied, exact expected hit: i2t@1 = 1/2 each; t2i@1: ship 2/3, bridge 1/3.
    rnd = base["random"]
    assert rnd["text_retrieval_recall@1"] == pytest.approx(0.5)
    assert rnd["image_retrieval_recall@1"] == pytest.approx(0.5)
    # Without a train split the test captions' frequencies rank the texts.
    assert B.retrieval_baselines(captions)["popularity"]["text_retrieval_recall@1"] == pytest.approx(2 / 3)


def test_majority_and_random_class_baselines():
    test = [0, 0, 0, 1, 2, 2]
    train = [2, 2, 2, 0, 1]
    base = B.classification_baselines(test, train, 3)
    assert base["majority"]["acc1"] == pytest.approx(2 / 6)  # class 2's share of the test items
    assert base["majority"]["mean_per_class_recall"] == pytest.approx(1 / 3)
    assert base["random"] == {"acc1": pytest.approx(1 / 3), "acc5": 1.0, "mean_per_class_recall": pytest.approx(1 / 3)}
    assert B.classification_baselines(test, None, 3)["majority"]["acc1"] == pytest.approx(0.5)


def test_counting_baselines_exact():
    base = B.counting_baselines([1, 2, 3, 6], train_counts=[1, 1, 4])
    mean = base["always_mean"]  # answer 2.0
    assert mean["answer"] == 2.0 and mean["mae"] == pytest.approx((1 + 0 + 1 + 4) / 4)
    assert mean["acc1"] == pytest.approx(0.25)
    common = base["always_most_common"]  # answer 1
    assert common["answer"] == 1.0 and common["mae"] == pytest.approx((0 + 1 + 2 + 5) / 4)
    assert common["acc1"] == pytest.approx(0.25)
    rnd = base["random"]
    assert rnd["acc1"] == pytest.approx(0.1)
    expected_mae = np.mean([np.mean(np.abs(np.arange(1, 11) - t)) for t in (1, 2, 3, 6)])
    assert rnd["mae"] == pytest.approx(expected_mae)


def test_beats_uses_best_baseline_and_direction():
    base = {"majority": {"acc1": 0.68, "mae": 1.5}, "random": {"acc1": 0.17, "mae": 3.0}}
    assert B.beats({"acc1": 0.40, "mae": 1.2, "other": 9.0}, base) == {"acc1": False, "mae": True}
    assert B.best_baseline("mae", base) == ("majority", 1.5)


def test_below_baseline_marked_in_table():
    res = {"model": {"name": "weak"}, "results": {"zeroshot": {"chips": {
        "metrics": {"acc1": 0.27, "mean_per_class_recall": 0.5},
        "baselines": {"majority": {"acc1": 0.68, "mean_per_class_recall": 0.25},
                      "random": {"acc1": 0.25, "mean_per_class_recall": 0.25}},
        "beats_baselines": {"acc1": False, "mean_per_class_recall": True}}}}}
    lines = compare([res]).splitlines()
    assert lines[2] == f"| weak | 0.2700 {BELOW} | 0.5000 |"
    assert lines[3] == "| *baseline: majority class* | 0.6800 | 0.2500 |"
    assert any(BELOW in line and "best baseline" in line for line in lines)


class ConstantModel(FakeModel):
    """Every image and text embeds to the same vector: it must lose to (or tie) every baseline."""

    def eval_model(self, name: str = "constant"):
        em = super().eval_model(name)
        em.encode_images = lambda batch: np.ones((len(batch), 32), np.float32) / np.sqrt(32)
        em.encode_texts = lambda batch: np.ones((len(batch), 32), np.float32) / np.sqrt(32)
        em.fingerprint = None
        return em


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    data = write_build(root / "build")
    log = root / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": s, "loss": 3.0 / (1 + s), "lr": 1e-3}) + "\n" for s in range(1, 41)))
    good = evaluate(FakeModel().eval_model(), data, None, root / "good", fewshot_ks=(1, 2, 4),
                    fewshot_seeds=(0, 1), train_log=log)
    bad = evaluate(ConstantModel().eval_model(), data, None, root / "bad", fewshot_ks=(1, 2), fewshot_seeds=(0,))
    return root, good, bad


def test_results_json_has_baselines_and_flags(reports):
    root, good, bad = reports
    on_disk = json.loads((root / "good" / "results.json").read_text())
    r = on_disk["results"]
    ret = r["retrieval"]
    assert set(ret["baselines"]) == {"random", "popularity"} and ret["beats_baselines"]["mean_recall"] is True
    assert ret["baselines"]["popularity"]["mean_recall"] > ret["baselines"]["random"]["mean_recall"]
    zs = r["zeroshot"]["chips"]
    assert zs["baselines"]["majority"]["acc1"] <= 1 and "train split" in zs["baselines_from"]
    assert sum(zs["metrics"]["per_class_support"].values()) == zs["metrics"]["num_samples"]
    assert set(r["linear"]["chips"]["baselines"]["majority"]) == {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall"}
    assert r["fewshot"]["chips"]["beats_baselines"]["k=4"]["acc1_mean"] is True
    cnt = r["counting"]
    assert set(cnt["baselines"]) == {"always_mean", "always_most_common", "random"}
    assert cnt["beats_baselines"]["words"] == {"acc1": True, "within_one": True, "mae": True, "rmse": True}
    # The constant model ties the random baseline at best: never marked as beating it.
    b = bad["results"]
    assert b["retrieval"]["beats_baselines"]["mean_recall"] is False
    assert b["zeroshot"]["chips"]["beats_baselines"]["acc1"] is False
    assert b["retrieval"]["metrics"]["mean_recall"] == pytest.approx(
        b["retrieval"]["baselines"]["random"]["mean_recall"])
    md = (root / "bad" / "report.md").read_text()
    assert f"**{BELOW} not above" in md and "| Class | Test items | Recall |" in md


def _ink(path):
    """Share of pixels that are not (near) white, and the number of distinct colours."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return float(np.mean(a.min(axis=2) < 230)), len(np.unique(a.reshape(-1, 3), axis=0))


def test_plots_embedded_and_drawn(reports):
    root, good, bad = reports
    md = (root / "good" / "report.md").read_text()
    for name in ("loss_curve", "fewshot_chips", "retrieval_recall", "counting_confusion_words"):
        path = root / "good" / "plots" / f"{name}.png"
        assert f"(plots/{name}.png)" in md
        ink, colours = _ink(path)
        assert 0.02 < ink < 0.6 and colours > 20, name
    # The loss falls: its line's pixels are high on the left and low on the right.
    with Image.open(root / "good" / "plots" / "loss_curve.png") as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    blue = (a[..., 2] > 150) & (a[..., 0] < 80)  # tab:blue line
    ys, xs = np.nonzero(blue[:, : a.shape[1] * 3 // 4])
    left, right = ys[xs < np.percentile(xs, 20)].mean(), ys[xs > np.percentile(xs, 80)].mean()
    assert left < right  # image rows grow downwards
    assert not (root / "bad" / "plots" / "loss_curve.png").exists()  # no run log known


def test_write_comparison_embeds_per_model_plots(reports, tmp_path):
    _, good, bad = reports
    report = write_comparison([good, bad], tmp_path)
    md = report.read_text()
    assert "(plots/fake/retrieval_recall.png)" in md and "(plots/constant/retrieval_recall.png)" in md
    assert (tmp_path / "plots" / "fake" / "loss_curve.png").is_file()
    assert "*baseline: popularity ranker*" in md and BELOW in md
