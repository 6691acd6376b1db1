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


BASELINE_STYLE = {"random": "0.6", "majority": "tab:red", "popularity": "tab:orange",
                  "always_mean": "tab:red", "always_most_common": "tab:orange"}


def recall_bars(metrics: dict, path: Path, baselines: dict | None = None) -> Path:
    """Recall@k bars of the model beside each baseline's, one panel per direction."""
    plt = _fig()
    baselines = baselines or {}
    ks = sorted(int(k.split("@")[1]) for k in metrics if k.startswith("text_retrieval_recall@"))
    series = [("model", metrics, "tab:blue")] + [(b, m, BASELINE_STYLE.get(b, "0.4")) for b, m in baselines.items()]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
    x = np.arange(len(ks))
    w = 0.8 / len(series)
    for ax, key, title in zip(axes, ("text_retrieval_recall", "image_retrieval_recall"),
                              ("image to text", "text to image"), strict=True):
        for j, (name, m, color) in enumerate(series):
            vals = [m.get(f"{key}@{k}", np.nan) for k in ks]
            ax.bar(x - 0.4 + w * (j + 0.5), vals, w, label=name, color=color)
        ax.set_xticks(x, [f"R@{k}" for k in ks])
        ax.set_ylim(0, 1)
        ax.set_title(title)
    axes[0].set_ylabel("recall")
    axes[1].legend(fontsize=8)
    line = ", ".join(f"{n} {m['mean_recall']:.3f}" for n, m, _ in series if "mean_recall" in m)
    fig.suptitle(f"Retrieval mean recall: {line}", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def per_class_bars(per_class: dict[str, float], title: str, path: Path, support: dict[str, int] | None = None,
                   majority: float | None = None) -> Path:
    """Per-class recall bars, each labelled with its value and its number of test items (n)."""
    plt = _fig()
    names = sorted(per_class)
    support = support or {}
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.8))
    vals = [per_class[n] for n in names]
    bars = ax.bar(range(len(names)), vals)
    for b, v in zip(bars, vals, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, min(v, 0.95) + 0.02, f"{v:.2f}", ha="center", fontsize=7)
    labels = [f"{n}\n(n={support[n]})" if n in support else n for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=45, ha="right", fontsize=8)
    if majority is not None:
        ax.axhline(majority, color="tab:red", ls="--", lw=1, label=f"majority mean recall {majority:.2f}")
        ax.legend(fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def fewshot_curve(metrics: dict, title: str, path: Path, baselines: dict | None = None) -> Path:
    """Few-shot top-1 and mean per-class recall against k (mean +- std over seeds), baselines as lines."""
    plt = _fig()
    ks = sorted(int(k[2:]) for k in metrics)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, color, label in (("acc1", "tab:blue", "top-1"), ("mean_per_class_recall", "tab:green", "mean recall")):
        mean = [metrics[f"k={k}"][f"{key}_mean"] for k in ks]
        std = [metrics[f"k={k}"][f"{key}_std"] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", color=color, capsize=3, label=label)
        for b, ls in (("majority", "--"), ("random", ":")):
            v = (baselines or {}).get(b, {}).get(f"{key}_mean")
            if v is not None:
                ax.axhline(v, color=color, ls=ls, lw=1, label=f"{b} {label} {v:.2f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("examples per class (k)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(plt, fig, path)


def loss_curve(records: list[dict], path: Path) -> Path:
    """Training loss against step from the run's ``log.jsonl`` records, learning rate on a second axis."""
    plt = _fig()
    rows = [r for r in records if isinstance(r.get("loss"), (int, float)) and "step" in r]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    lr = [(r["step"], r["lr"]) for r in rows if isinstance(r.get("lr"), (int, float))]
    if lr:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lr, strict=True), color="tab:gray", lw=1, ls="--")
        ax2.set_ylabel("learning rate", color="tab:gray")
    ax.set_title(f"Training loss ({len(rows)} logged steps, last {rows[-1]['loss']:.3f})" if rows else "Training loss")
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
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > m.max() / 2 else "black")
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


def read_log(path: Path) -> list[dict]:
    """The JSON records of a run's ``log.jsonl`` (a line that is not JSON is skipped)."""
    import json

    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _slug(name: str) -> str:
    return name.replace(":", "_").replace("/", "_")


def make_plots(results: dict, out: Path) -> list[Path]:
    """Every plot the results allow: the training loss (when the run's log is known), retrieval recall with
    baselines, per-class zero-shot recall with support, few-shot against k, counting confusion and predicted
    vs true counts."""
    res = results.get("results", {})
    paths: list[Path] = []
    log_path = results.get("train_log")
    if log_path and Path(log_path).is_file():
        records = read_log(Path(log_path))
        if any("loss" in r for r in records):
            paths.append(loss_curve(records, out / "loss_curve.png"))
    if "retrieval" in res:
        r = res["retrieval"]
        paths.append(recall_bars(r["metrics"], out / "retrieval_recall.png", r.get("baselines")))
    for name, r in sorted((res.get("zeroshot") or {}).items()):
        m = r["metrics"]
        maj = (r.get("baselines") or {}).get("majority", {}).get("mean_per_class_recall")
        paths.append(per_class_bars(m["per_class_recall"], f"Zero-shot per-class recall ({name})",
                                    out / f"zeroshot_{_slug(name)}.png", m.get("per_class_support"), maj))
    for name, r in sorted((res.get("fewshot") or {}).items()):
        if r.get("metrics"):
            paths.append(fewshot_curve(r["metrics"], f"Few-shot linear probe ({name})",
                                       out / f"fewshot_{_slug(name)}.png", r.get("baselines")))
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
