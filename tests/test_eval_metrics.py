"""Evaluation metrics against hand-computed values on small fixed embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarclip_train.eval import counting, probes, retrieval, zeroshot

# Similarities (images x distinct texts a, b, c, d); image_emb = I so that image_emb @ text_emb.T = S.
CAPTIONS = [["a", "b"], ["a", "c"], ["d"]]
S = np.array([
    [0.1, 0.9, 0.5, 0.3],
    [0.2, 0.8, 0.1, 0.7],
    [0.6, 0.5, 0.4, 0.3],
])


def test_unique_texts_and_duplicate_rule():
    texts, pos = retrieval.unique_texts(CAPTIONS)
    assert texts == ["a", "b", "c", "d"]
    # "a" is a caption of images 0 and 1: both are its positives.
    assert pos.tolist() == [[True, True, False, False], [True, False, True, False], [False, False, False, True]]
    assert retrieval.duplicate_rate(CAPTIONS) == pytest.approx(1 - 4 / 5)
    assert retrieval.duplicate_rate([["x"], ["y"]]) == 0.0


def test_retrieval_recalls_hand_computed():
    _, pos = retrieval.unique_texts(CAPTIONS)
    m = retrieval.retrieval_metrics(np.eye(3), S.T, pos, ks=(1, 2, 3))
    # i2t best-positive ranks: img0 -> b first (0); img1 -> a at 0.2 behind b, d (2); img2 -> d behind a, b, c (3)
    assert m["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["text_retrieval_recall@2"] == pytest.approx(1 / 3)
    assert m["text_retrieval_recall@3"] == pytest.approx(2 / 3)
    # t2i: a -> img1 (0.2) behind img2 (rank 1); b -> 0; c -> img1 behind img0, img2 (2);
    # d -> img2 (0.3) behind img1 and tied with img0: at place 2 or 3 with chance 1/2 each.
    assert m["image_retrieval_recall@1"] == pytest.approx(1 / 4)
    assert m["image_retrieval_recall@2"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert m["image_retrieval_recall@3"] == pytest.approx(1.0)
    assert m["mean_recall"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3 + 1 / 4 + 2.5 / 4 + 1) / 6)


def test_retrieval_without_duplicate_rule_would_differ():
    # Counting only image 0 as the positive of "a" ranks it third (behind img2 0.6 and img1 0.2), not second.
    pos = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
    g, e, p = retrieval.tie_counts(S.T, pos.T)
    assert g.tolist() == [2, 0, 2, 1] and e.tolist() == [0, 0, 0, 1] and p.tolist() == [1, 1, 1, 1]


def test_ties_give_chance_not_perfect_recall():
    # A constant model: every score equal. 1 positive among 4 candidates -> R@1 = 1/4, R@2 = 1/2.
    pos = np.eye(4, dtype=bool)
    m = retrieval.retrieval_metrics(np.ones((4, 2)), np.ones((4, 2)), pos, ks=(1, 2, 4))
    assert m["text_retrieval_recall@1"] == pytest.approx(0.25)
    assert m["image_retrieval_recall@2"] == pytest.approx(0.5)
    assert m["text_retrieval_recall@4"] == pytest.approx(1.0)
    # Two tied positives among five candidates: P(miss top 1) = 3/5, P(miss top 2) = 3/5 * 2/4.
    assert retrieval.hit_probability(0, 3, 2, 1) == pytest.approx(2 / 5)
    assert retrieval.hit_probability(0, 3, 2, 2) == pytest.approx(1 - 3 / 10)
    assert retrieval.hit_probability(1, 3, 2, 1) == 0.0


def test_evaluate_retrieval_reports_counts_and_default_ks():
    emb = {t: S.T[i] for i, t in enumerate("abcd")}
    m = retrieval.evaluate_retrieval(np.eye(3), CAPTIONS, emb)
    assert m["text_retrieval_recall@10"] == 1.0 and m["image_retrieval_recall@5"] == 1.0
    assert m["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert (m["num_images"], m["num_texts"], m["num_captions"]) == (3, 4, 5)
    assert m["duplicate_rate"] == pytest.approx(0.2)


SCORES = np.array([
    [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: correct
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # label 0: rank 5, outside top-5
    [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 1: rank 1, inside top-5
    [0.0, 0.0, 0.9, 0.0, 0.0, 0.1],  # label 2: correct
])
LABELS = np.array([0, 0, 1, 2])
CLASSES = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]


def test_zeroshot_topk_and_mean_per_class_recall():
    m = zeroshot.zeroshot_metrics(SCORES, LABELS, np.eye(6), CLASSES)
    assert m["acc1"] == pytest.approx(0.5)
    assert m["acc5"] == pytest.approx(0.75)
    assert m["per_class_recall"] == {"ship": 0.5, "aircraft": 0.0, "car": 1.0}
    assert m["mean_per_class_recall"] == pytest.approx(0.5)
    assert (m["num_samples"], m["num_classes"]) == (4, 6)


def test_zeroshot_ties_follow_argmax():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])
    m = zeroshot.classification_metrics(scores, np.array([0, 1]), ["a", "b", "c"])
    assert m["acc1"] == 0.5 and m["per_class_recall"] == {"a": 1.0, "b": 0.0}
    assert zeroshot.topk_accuracy(scores, np.array([1, 1]), 2) == 1.0


def test_class_weights_prompt_ensemble():
    vec = {"a cat.": [1, 0, 0], "the cat.": [0, 2, 0], "a big dog.": [0, 0, 3], "the big dog.": [0, 0, 1]}
    w = zeroshot.class_weights(lambda texts: np.array([vec[t] for t in texts], float), ["cat", "big_dog"],
                               ["a {c}.", "the {c}."])
    np.testing.assert_allclose(w, [[1 / math.sqrt(2), 1 / math.sqrt(2), 0], [0, 0, 1]])


def test_templates_file(tmp_path):
    assert "a SAR image of a {c}." in zeroshot.load_templates()
    bad = tmp_path / "bad.toml"
    bad.write_text('templates = ["no placeholder"]\n')
    with pytest.raises(ValueError, match="bad.toml"):
        zeroshot.load_templates(bad)


ITEM = {"key": "s/a", "count": 3, "template": "There are {n} in the image.", "singular": "ship", "plural": "ships"}


def test_counting_captions_words_and_digits():
    words = counting.count_captions(ITEM, "words")
    digits = counting.count_captions(ITEM, "digits")
    assert words[0] == "There are one ship in the image."
    assert words[2] == "There are three ships in the image."
    assert words[9] == "There are ten ships in the image."
    assert digits[0] == "There are 1 ship in the image."
    assert digits[6] == "There are 7 ships in the image."
    assert len(words) == len(digits) == 10


def test_counting_prediction_is_best_caption():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    caps = np.zeros((2, 10, 2))
    caps[0, 3] = [1.0, 0.0]  # item 0: caption "4" matches best
    caps[1, 9] = [0.0, 0.5]  # item 1: caption "10"
    assert counting.predict_counts(img, caps).tolist() == [4, 10]


def test_counting_metrics_hand_computed():
    m = counting.counting_metrics([1, 2, 3, 4, 10], [1, 3, 3, 7, 8])
    assert m["acc1"] == pytest.approx(0.4)
    assert m["within_one"] == pytest.approx(0.6)
    assert m["mae"] == pytest.approx(1.2)
    assert m["rmse"] == pytest.approx(math.sqrt(14 / 5))
    cm = np.array(m["confusion"])
    expected = np.zeros((10, 10), int)
    for t, p in [(1, 1), (2, 3), (3, 3), (4, 7), (10, 8)]:
        expected[t - 1, p - 1] += 1
    np.testing.assert_array_equal(cm, expected)
    assert counting.in_range([{"count": c} for c in (0, 5, 11, 10)]) == [1, 3]


def test_fewshot_sampling_deterministic():
    labels = np.array([0] * 20 + [1] * 3 + [2] * 10)
    a = probes.fewshot_indices(labels, 4, seed=7)
    assert a.tolist() == probes.fewshot_indices(labels, 4, seed=7).tolist()
    assert not np.array_equal(a, probes.fewshot_indices(labels, 4, seed=8))
    assert np.bincount(labels[a]).tolist() == [4, 3, 4]  # class 1 has only three
    assert len(set(a.tolist())) == len(a)


class _FakeClf:
    def __init__(self, c):
        self.c = c

    def predict(self, x):
        return np.zeros(len(x), int) if self.c in (1.0, 10.0) else np.ones(len(x), int)


def test_select_c_picks_best_val_and_smallest_on_ties(monkeypatch):
    monkeypatch.setattr(probes, "fit_logreg", lambda x, y, c, seed=0: _FakeClf(c))
    x = np.zeros((4, 2))
    c, accs = probes.select_c((x, np.zeros(4, int)), (x, np.zeros(4, int)), grid=(0.1, 1.0, 10.0, 100.0))
    assert c == 1.0
    assert accs == {0.1: 0.0, 1.0: 1.0, 10.0: 1.0, 100.0: 0.0}


def _blobs(n0, n1, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal([-1, 0], 0.2, (n0, 2)), rng.normal([1, 0], 0.2, (n1, 2))])
    return x, np.array([0] * n0 + [1] * n1)


def test_linear_probe_chooses_c_on_validation():
    train, val, test = _blobs(18, 2, 0), _blobs(10, 10, 1), _blobs(10, 10, 2)
    c, accs = probes.select_c(train, val, grid=(1e-4, 1e4))
    assert accs[1e4] == 1.0 and accs[c] == max(accs.values())  # the best validation C is chosen
    m = probes.linear_probe(train, val, test, ["a", "b"], grid=(1e-4, 1e4))
    assert m["C"] == c and m["lp_acc1"] == 1.0 and m["lp_mean_per_class_recall"] == 1.0


def test_fewshot_probe_mean_std():
    train, test = _blobs(20, 20, 3), _blobs(10, 10, 4)
    m = probes.fewshot_probe(train, test, ["a", "b"], ks=(1, 4), seeds=(0, 1, 2))
    assert set(m) == {"k=1", "k=4"}
    assert m["k=4"]["acc1_mean"] == 1.0 and m["k=4"]["acc1_std"] == 0.0
    assert len(m["k=1"]["acc1_per_seed"]) == 3


def test_count_regression_probe():
    rng = np.random.default_rng(0)
    y = np.arange(1, 11).repeat(3)
    x = np.stack([y, rng.normal(size=len(y))], axis=1).astype(float)
    m = probes.count_regression_probe(x, y, x[:10], y[:10], alphas=(1e-6,))
    assert m["acc1"] == 1.0 and m["mae"] < 0.01 and m["rmse"] < 0.01
