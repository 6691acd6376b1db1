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


def class_histogram(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Instances per class, one bar group per split."""
    plt = _pyplot()
    counts = {s: Counter() for s in SPLIT_ORDER}
    for r in records:
        counts[r["split"]].update(r["counts"])
    classes = sorted({c for cnt in counts.values() for c in cnt}) or ["(none)"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(SPLIT_ORDER)
    for i, split in enumerate(SPLIT_ORDER):
        xs = [j + i * width for j in range(len(classes))]
        ax.bar(xs, [counts[split].get(c, 0) for c in classes], width, label=split)
    ax.set_xticks([j + width for j in range(len(classes))], classes, rotation=30, ha="right")
    ax.set_ylabel("instances")
    ax.set_title("Instances per class and split")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def objects_per_image(records: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    n = [len(r["objects"]) for r in records] or [0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(n, bins=range(0, max(n) + 2), align="left", color="tab:blue")
    ax.set_xlabel("objects per image")
    ax.set_ylabel("images")
    ax.set_title("Objects per image")
    fig.tight_layout()
    return _save(fig, path)


def caption_lengths(records: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    words = [w for r in records for w in r["caption_words"]] or [0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(words, bins=range(0, max(words) + 2), align="left", color="tab:green")
    ax.set_xlabel("caption length (words)")
    ax.set_ylabel("captions")
    ax.set_title("Caption lengths")
    fig.tight_layout()
    return _save(fig, path)


def image_sizes(records: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for source in sorted({r["source"] for r in records}):
        pts = [(r["width"], r["height"]) for r in records if r["source"] == source and r["width"]]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, label=source, alpha=0.7)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes")
    if records:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


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
