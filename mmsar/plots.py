"""PNG plots for the dataset card: class histogram per split, objects per image, caption lengths and
image sizes. Pure functions of the scene records; matplotlib (Agg) is imported only here, lazily, so the
base install needs it only when a build draws plots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPLIT_ORDER = ("train", "val", "test")
PNG_META = {"Software": None}  # no version string: same data, same bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import io

    from d2c.shards import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata=PNG_META)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _log_if_wide(ax: Any, values: Sequence[int], ratio: float = 30.0) -> None:
    """Log scale when the positive counts span more than ``ratio``: a class with one instance next to one
    with thousands stays visible (a linear axis draws it as nothing)."""
    pos = [v for v in values if v > 0]
    if pos and max(pos) / min(pos) > ratio:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)


def _label_bars(ax: Any, bars: Any) -> None:
    """The count on top of every non-empty bar: readable without hovering or guessing from the axis."""
    labels = [str(int(b.get_height())) if b.get_height() > 0 else "" for b in bars]
    ax.bar_label(bars, labels=labels, fontsize=7, padding=1)


def class_histogram_figure(records: Sequence[dict[str, Any]]) -> Any:
    """Instances per class, one bar group per split, counts on the bars, log scale when they span
    orders of magnitude."""
    plt = _pyplot()
    counts = {s: Counter() for s in SPLIT_ORDER}
    for r in records:
        counts[r["split"]].update(r["counts"])
    classes = sorted({c for cnt in counts.values() for c in cnt}) or ["(none)"]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(classes) + 2), 4.5))
    width = 0.8 / len(SPLIT_ORDER)
    for i, split in enumerate(SPLIT_ORDER):
        xs = [j + i * width for j in range(len(classes))]
        _label_bars(ax, ax.bar(xs, [counts[split].get(c, 0) for c in classes], width, label=split))
    ax.set_xticks([j + width for j in range(len(classes))], classes, rotation=30, ha="right")
    _log_if_wide(ax, [v for cnt in counts.values() for v in cnt.values()])
    ax.set_ylabel("instances" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title("Instances per class and split")
    ax.legend()
    fig.tight_layout()
    return fig


def objects_per_image_figure(records: Sequence[dict[str, Any]]) -> Any:
    plt = _pyplot()
    hist = Counter(len(r["objects"]) for r in records) or Counter({0: 0})
    xs = list(range(0, max(hist) + 1))
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(xs) + 2), 4))
    bars = ax.bar(xs, [hist.get(x, 0) for x in xs], 0.85, color="tab:blue")
    if len(xs) <= 40:
        _label_bars(ax, bars)
    _log_if_wide(ax, list(hist.values()))
    ax.set_xlabel("objects per image")
    ax.set_ylabel("images" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title("Objects per image")
    fig.tight_layout()
    return fig


def caption_lengths_figure(records: Sequence[dict[str, Any]]) -> Any:
    plt = _pyplot()
    words = [w for r in records for w in r["caption_words"]] or [0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(words, bins=range(0, max(words) + 2), align="left", color="tab:green")
    ax.set_xlabel("caption length (words)")
    ax.set_ylabel("captions")
    ax.set_title(f"Caption lengths (median {sorted(words)[len(words) // 2]} words)")
    fig.tight_layout()
    return fig


def size_points(records: Sequence[dict[str, Any]]) -> dict[str, Counter]:
    """Per source, how many images have each (width, height)."""
    out: dict[str, Counter] = {}
    for r in records:
        if r["width"] and r["height"]:
            out.setdefault(r["source"], Counter())[(r["width"], r["height"])] += 1
    return dict(sorted(out.items()))


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def marker_area(images: int) -> float:
    """Scatter marker area (pt^2) for a size shared by ``images`` images: grows with the square root."""
    return 20 + 120 * images ** 0.5


def image_sizes_figure(records: Sequence[dict[str, Any]]) -> Any:
    """One marker per distinct size and source, its area growing with the number of images of that size
    (40 images of one size are one big marker, not one small dot), hollow and of a shape per source so
    sources sharing a size both show; sizes held by several images are labelled with their count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, (source, pts) in enumerate(size_points(records).items()):
        sizes = sorted(pts)
        n = [pts[p] for p in sizes]
        ax.scatter([p[0] for p in sizes], [p[1] for p in sizes], s=[marker_area(k) for k in n],
                   marker=MARKERS[i % len(MARKERS)], facecolors="none", edgecolors=f"C{i}", linewidths=1.5,
                   label=f"{source} ({sum(n)} images)")
        for (w, h), k in zip(sizes, n, strict=True):
            if k > 1:
                ax.annotate(f"x{k}", (w, h), xytext=(10, 6 - 10 * i), textcoords="offset points", fontsize=7,
                            color=f"C{i}")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes (marker area ~ number of images)")
    if records:
        ax.legend(fontsize="small", markerscale=0.5)
    ax.margins(0.15)
    fig.tight_layout()
    return fig


def class_histogram(records: Sequence[dict[str, Any]], path: Path) -> Path:
    return _save(class_histogram_figure(records), path)


def objects_per_image(records: Sequence[dict[str, Any]], path: Path) -> Path:
    return _save(objects_per_image_figure(records), path)


def caption_lengths(records: Sequence[dict[str, Any]], path: Path) -> Path:
    return _save(caption_lengths_figure(records), path)


def image_sizes(records: Sequence[dict[str, Any]], path: Path) -> Path:
    return _save(image_sizes_figure(records), path)


PLOTS = {
    "class_histogram.png": class_histogram,
    "objects_per_image.png": objects_per_image,
    "caption_lengths.png": caption_lengths,
    "image_sizes.png": image_sizes,
}


def make_plots(records: Sequence[dict[str, Any]], out_dir: Path) -> list[str]:
    """Draw every plot of ``records`` (scene records with their ``split``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [fn(records, out_dir / name).name for name, fn in PLOTS.items()]
