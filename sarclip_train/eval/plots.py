"""PNG plots of one model's results (matplotlib, Agg backend, no timestamps in the files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_META = {"Software": None}


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100, metadata=_META)
    plt.close(fig)
    tmp.replace(path)
    return path


def recall_bars(metrics: dict, path: Path) -> Path:
    plt = _fig()
    ks = sorted(int(k.split("@")[1]) for k in metrics if k.startswith("text_retrieval_recall@"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(len(ks))
    ax.bar(x - 0.2, [metrics[f"text_retrieval_recall@{k}"] for k in ks], 0.4, label="image to text")
    ax.bar(x + 0.2, [metrics[f"image_retrieval_recall@{k}"] for k in ks], 0.4, label="text to image")
    ax.set_xticks(x, [f"R@{k}" for k in ks])
    ax.set_ylim(0, 1)
    ax.set_title(f"Retrieval (mean recall {metrics['mean_recall']:.3f})")
    ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path)


def per_class_bars(per_class: dict[str, float], title: str, path: Path) -> Path:
    plt = _fig()
    names = sorted(per_class)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), [per_class[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.set_title(title)
    fig.tight_layout()
    return _save(plt, fig, path)


def confusion(matrix: list[list[int]], labels: list[int], title: str, path: Path) -> Path:
    plt = _fig()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(m, cmap="Blues", interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(plt, fig, path)


def pred_vs_true(series: dict[str, tuple[list, list]], path: Path) -> Path:
    plt = _fig()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (true, pred) in series.items():
        ax.scatter(true, pred, s=12, alpha=0.6, label=name)
    ax.plot([0, 11], [0, 11], "k--", lw=1)
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 11)
    ax.set_xlabel("true count")
    ax.set_ylabel("predicted count")
    ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path)


def make_plots(results: dict, out: Path) -> list[Path]:
    """Every plot the results allow: recall@k bars, per-class zero-shot recall, counting confusion and
    predicted vs true counts."""
    res = results.get("results", {})
    paths: list[Path] = []
    if "retrieval" in res:
        paths.append(recall_bars(res["retrieval"]["metrics"], out / "retrieval_recall.png"))
    for name, r in sorted((res.get("zeroshot") or {}).items()):
        slug = name.replace(":", "_").replace("/", "_")
        paths.append(per_class_bars(r["metrics"]["per_class_recall"], f"Zero-shot per-class recall ({name})",
                                    out / f"zeroshot_{slug}.png"))
    cnt = (res.get("counting") or {}).get("metrics", {})
    series = {}
    for variant in ("words", "digits"):
        if "confusion" in cnt.get(variant, {}):
            m = cnt[variant]
            paths.append(confusion(m["confusion"], m["labels"], f"Counting confusion ({variant})",
                                   out / f"counting_confusion_{variant}.png"))
            series[f"zero-shot ({variant})"] = (m["true"], m["pred"])
    if "predictions" in cnt.get("regression_probe", {}):
        reg = cnt["regression_probe"]
        series["regression probe"] = (reg["true"], reg["predictions"])
    if series:
        paths.append(pred_vs_true(series, out / "counting_pred_vs_true.png"))
    return paths
