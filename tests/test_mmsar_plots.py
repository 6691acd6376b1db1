"""The card's plots read at a glance: log scale where counts span orders of magnitude, counts on the bars,
identical image sizes drawn as one marker whose area and label give their number."""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from mmsar import plots  # noqa: E402


def _rec(split: str, counts: dict[str, int], source: str = "a", size: tuple[int, int] = (800, 600)) -> dict:
    return {"split": split, "counts": counts, "source": source, "width": size[0], "height": size[1],
            "objects": [{}] * sum(counts.values()), "caption_words": [7, 9]}


def test_class_histogram_goes_log_and_labels_its_bars(tmp_path):
    records = [_rec("train", {"ship": 500})] * 4 + [_rec("val", {"harbor": 1})]
    fig = plots.class_histogram_figure(records)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # 2000 ships next to one harbour: the harbour bar stays visible
    labels = {t.get_text() for t in ax.texts}
    assert {"2000", "1"} <= labels and "0" not in labels
    path = plots.class_histogram(records, tmp_path / "h.png")
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        assert im.size == (700, 450)
    even = plots.class_histogram_figure([_rec("train", {"ship": 5, "car": 3})])
    assert even.axes[0].get_yscale() == "linear"


def test_objects_per_image_counts_on_bars():
    fig = plots.objects_per_image_figure([_rec("train", {"ship": 2})] * 3 + [_rec("train", {"ship": 1})])
    ax = fig.axes[0]
    assert [round(b.get_height()) for b in ax.patches] == [0, 1, 3]
    assert {t.get_text() for t in ax.texts} == {"1", "3", ""}


def test_image_sizes_show_multiplicity_and_overlapping_sources():
    records = [_rec("train", {"ship": 1}, "a", (160, 160))] * 40 + [_rec("train", {"ship": 1}, "a", (300, 200))]
    records += [_rec("train", {"ship": 1}, "b", (160, 160))] * 3
    fig = plots.image_sizes_figure(records)
    ax = fig.axes[0]
    a, b = ax.collections
    assert list(a.get_sizes()) == [plots.marker_area(40), plots.marker_area(1)]  # sorted by size
    assert list(b.get_sizes()) == [plots.marker_area(3)]
    assert plots.marker_area(40) > 5 * plots.marker_area(1)
    assert len(a.get_paths()[0].vertices) != len(b.get_paths()[0].vertices)  # circle, then square
    assert {t.get_text() for t in ax.texts} == {"x40", "x3"}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (41 images)", "b (3 images)"]
