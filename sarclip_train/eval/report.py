"""Evaluation outputs: ``results.json``, ``report.md`` (a comparison table across models) and PNG plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import orjson

from d2c.writers import atomic_write_bytes

# (column title, path into results["results"]) for the comparison table, in display order. The part of a
# path before "metrics" names the task node that holds the metric's ``baselines`` and ``beats_baselines``.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Retr. mean R", ("retrieval", "metrics", "mean_recall")),
    ("I2T R@1", ("retrieval", "metrics", "text_retrieval_recall@1")),
    ("T2I R@1", ("retrieval", "metrics", "image_retrieval_recall@1")),
    ("Dup. rate", ("retrieval", "metrics", "duplicate_rate")),
    ("ZS top-1", ("zeroshot", "chips", "metrics", "acc1")),
    ("ZS top-5", ("zeroshot", "chips", "metrics", "acc5")),
    ("ZS mean recall", ("zeroshot", "chips", "metrics", "mean_per_class_recall")),
    ("16-shot top-1", ("fewshot", "chips", "metrics", "k=16", "acc1_mean")),
    ("Linear top-1", ("linear", "chips", "metrics", "lp_acc1")),
    ("Linear mean recall", ("linear", "chips", "metrics", "lp_mean_per_class_recall")),
    ("Count top-1 (words)", ("counting", "metrics", "words", "acc1")),
    ("Count top-1 (digits)", ("counting", "metrics", "digits", "acc1")),
    ("Count MAE (words)", ("counting", "metrics", "words", "mae")),
    ("Count MAE (digits)", ("counting", "metrics", "digits", "mae")),
    ("Count probe top-1", ("counting", "metrics", "regression_probe", "acc1")),
    ("Count probe MAE", ("counting", "metrics", "regression_probe", "mae")),
)
BELOW = "\u25bc"  # marks a value that does not beat its best baseline
LEGEND = (f"{BELOW} = not better than the best baseline on the same test items (higher is better, except "
          "MAE/RMSE: lower). Baselines are defined in docs/evaluation.md.")
BASELINE_LABEL = {"random": "random", "majority": "majority class", "popularity": "popularity ranker",
                  "always_mean": "always the mean", "always_most_common": "always the most common"}


def _get(d: dict, path: Sequence[str]):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _columns(results_list: Sequence[dict]) -> list[tuple[str, tuple[str, ...]]]:
    """The fixed columns plus, for every ImageFolder set, its zero-shot top-1; only columns with a value."""
    cols = list(COLUMNS)
    for r in results_list:
        for name in _get(r, ("results", "zeroshot")) or {}:
            col = (f"ZS top-1 ({name})", ("zeroshot", name, "metrics", "acc1"))
            if name != "chips" and col not in cols:
                cols.append(col)
    return [c for c in cols if any(_get(r.get("results", {}), c[1]) is not None for r in results_list)]


def _split(path: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(task node path, path inside its metrics) of a column path."""
    i = list(path).index("metrics")
    return tuple(path[:i]), tuple(path[i + 1:])


def _baseline_of(res: dict, path: Sequence[str], baseline: str):
    node, inner = _split(path)
    return _get(res, (*node, "baselines", baseline, inner[-1]))


def _beats(res: dict, path: Sequence[str]) -> bool | None:
    node, inner = _split(path)
    return _get(res, (*node, "beats_baselines", *inner))


def _cell(res: dict, path: Sequence[str]) -> str:
    text = _fmt(_get(res, path))
    return f"{text} {BELOW}" if _beats(res, path) is False else text


def _baseline_names(results_list: Sequence[dict], cols) -> list[str]:
    names: list[str] = []
    for r in results_list:
        for _, path in cols:
            node, _ = _split(path)
            for b in _get(r.get("results", {}), (*node, "baselines")) or {}:
                if b not in names:
                    names.append(b)
    return names


def compare(results_list: Sequence[dict]) -> str:
    """A Markdown table, one row per evaluated model, one column per headline metric, then one row per
    baseline (its value on the test items of the first model that has it); values that do not beat their
    best baseline carry the marker."""
    cols = _columns(results_list)
    head = "| Model | " + " | ".join(c[0] for c in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    rows = [f"| {_get(r, ('model', 'name')) or '?'} | "
            + " | ".join(_cell(r.get("results", {}), c[1]) for c in cols) + " |" for r in results_list]
    for b in _baseline_names(results_list, cols):
        vals = []
        for _, path in cols:
            found = [v for r in results_list if (v := _baseline_of(r.get("results", {}), path, b)) is not None]
            vals.append(_fmt(found[0]) if found else "-")
        rows.append(f"| *baseline: {BASELINE_LABEL.get(b, b)}* | " + " | ".join(vals) + " |")
    table = "\n".join([head, sep, *rows]) + "\n"
    if any(_beats(r.get("results", {}), c[1]) is not None for r in results_list for c in cols):
        table += f"\n{LEGEND}\n"
    return table


def write_atomic(path: Path, data: bytes) -> None:
    """Never a half-written report under its final name (d2c's temp-file-and-rename writer)."""
    atomic_write_bytes(path, data)


def to_json(obj) -> bytes:
    """Sorted, indented JSON (NaN becomes null), so equal results give equal bytes."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _leaves(metrics: dict, baselines: dict, prefix: tuple[str, ...] = ()):
    """(path inside metrics, value) of every numeric metric some baseline has, nested dicts walked."""
    names = {m for b in baselines.values() for m in b}
    for k, v in metrics.items():
        if isinstance(v, dict):
            yield from _leaves(v, baselines, (*prefix, k))
        elif k in names and isinstance(v, (int, float)):
            yield (*prefix, k), v


def _verdict(metric: str, beats: bool | None, baselines: dict) -> str:
    from sarclip_train.eval.baselines import best_baseline

    best = best_baseline(metric, baselines)
    if beats is None or best is None:
        return "-"
    if beats:
        return "beats all"
    word = "not below" if metric in ("mae", "rmse") else "not above"
    return f"**{BELOW} {word} {BASELINE_LABEL.get(best[0], best[0])} {best[1]:.4f}**"


def baseline_table(node: dict) -> list[str]:
    """A task node's metrics beside each of its baselines, with the verdict against the best one."""
    base = node.get("baselines") or {}
    rows = list(_leaves(node.get("metrics") or {}, base))
    if not base or not rows:
        return []
    names = list(base)
    lines = ["| Metric | Model | " + " | ".join(BASELINE_LABEL.get(b, b) for b in names) + " | Verdict |",
             "|---|---:|" + "---:|" * len(names) + "---|"]
    for path, value in rows:
        beats = _get(node.get("beats_baselines") or {}, path)
        cells = [_fmt(base[b].get(path[-1])) for b in names]
        mark = f" {BELOW}" if beats is False else ""
        lines.append(f"| {' '.join(path)} | {_fmt(value)}{mark} | " + " | ".join(cells)
                     + f" | {_verdict(path[-1], beats, base)} |")
    if node.get("baselines_from"):
        lines.append(f"\nBaselines taken from: {node['baselines_from']}.")
    return lines


def _per_class(metrics: dict) -> list[str]:
    recall = metrics.get("per_class_recall") or {}
    if not recall:
        return []
    support = metrics.get("per_class_support") or {}
    lines = ["", "| Class | Test items | Recall |", "|---|---:|---:|"]
    lines += [f"| {c} | {support.get(c, '-')} | {_fmt(v)} |" for c, v in sorted(recall.items())]
    return lines


TASK_TITLES = {"retrieval": "Retrieval", "zeroshot": "Zero-shot", "fewshot": "Few-shot", "linear": "Linear probe",
               "counting": "Counting"}


def _details(results: dict, plots: Sequence[str] = ()) -> list[str]:
    lines: list[str] = []
    res = results.get("results", {})
    by_stem = {Path(p).stem: p for p in plots}

    def embed(*stems: str) -> None:
        for stem in stems:
            if stem in by_stem:
                lines.append(f"\n![{stem}]({by_stem.pop(stem)})")

    if results.get("train_log"):
        lines.append(f"\nTraining log: `{results['train_log']}`")
        embed("loss_curve")
    for task in ("retrieval", "counting"):
        if task in res:
            lines.append(f"\n### {TASK_TITLES[task]}\n")
            lines += baseline_table(res[task])
            embed("retrieval_recall") if task == "retrieval" else \
                embed("counting_confusion_words", "counting_confusion_digits", "counting_pred_vs_true")
    for task in ("zeroshot", "fewshot", "linear"):
        for name, node in (res.get(task) or {}).items():
            slug = name.replace(":", "_").replace("/", "_")
            lines.append(f"\n### {TASK_TITLES[task]} ({name})\n")
            if task == "fewshot":
                lines += ["| k | top-1 mean | top-1 std | mean recall mean |", "|---:|---:|---:|---:|"]
                beats = node.get("beats_baselines") or {}
                for k, m in node["metrics"].items():
                    b = beats.get(k, {})
                    lines.append(f"| {k[2:]} | {_fmt(m['acc1_mean'])}{f' {BELOW}' if b.get('acc1_mean') is False else ''}"
                                 f" | {_fmt(m['acc1_std'])} | {_fmt(m['mean_per_class_recall_mean'])}"
                                 f"{f' {BELOW}' if b.get('mean_per_class_recall_mean') is False else ''} |")
                lines.append("")
            lines += baseline_table(node)
            if task != "fewshot":
                lines += _per_class(node.get("metrics") or {})
            embed(f"{task}_{slug}")
    if results.get("skipped"):
        lines.append("\n### Skipped\n")
        lines += [f"- {k}: {v}" for k, v in sorted(results["skipped"].items())]
    if by_stem:
        lines.append("\n### Other plots\n")
        lines += [f"![{stem}]({p})" for stem, p in by_stem.items()]
    return lines


def markdown(results_list: Sequence[dict], plots: Sequence[Sequence[str]] = ()) -> str:
    """report.md: the comparison table with baselines, then per model its metrics beside their baselines,
    per-class support and its plots (``plots[i]``: model i's plot paths relative to the report)."""
    lines = ["# SARCLIP evaluation\n", compare(results_list)]
    for i, r in enumerate(results_list):
        lines.append(f"\n## {_get(r, ('model', 'name'))}\n")
        lines.append(f"Data: `{_get(r, ('data', 'dir'))}`, seed {r.get('seed')}, tasks: {', '.join(r.get('tasks', []))}")
        lines += _details(r, plots[i] if i < len(plots) else ())
    return "\n".join(lines) + "\n"


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """``results.json``, ``plots/*.png`` and ``report.md`` for one model's results."""
    from sarclip_train.eval.plots import make_plots

    out_dir = Path(out_dir)
    write_atomic(out_dir / "results.json", to_json(results))
    plots = make_plots(results, out_dir / "plots")
    rel = [p.relative_to(out_dir).as_posix() for p in plots]
    write_atomic(out_dir / "report.md", markdown([results], [rel]).encode())
    return {"results": out_dir / "results.json", "report": out_dir / "report.md"}


def _model_slugs(results_list: Sequence[dict]) -> list[str]:
    """A distinct folder name per model (its name made path-safe, numbered when names repeat)."""
    out: list[str] = []
    for i, r in enumerate(results_list):
        raw = str(_get(r, ("model", "name")) or f"model{i}")
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in raw).strip(".") or f"model{i}"
        out.append(slug if slug not in out else f"{slug}-{i}")
    return out


def write_comparison(results_list: Sequence[dict], out_dir: Path, *, plots: bool = True) -> Path:
    """A top-level ``report.md`` and ``results.json`` (a list) comparing several models; each model's
    plots go to ``plots/<model>/`` and are embedded in its section (``plots=False``: none)."""
    from sarclip_train.eval.plots import make_plots

    out_dir = Path(out_dir)
    write_atomic(out_dir / "results.json", to_json({"models": list(results_list)}))
    rels: list[list[str]] = []
    for r, slug in zip(results_list, _model_slugs(results_list), strict=True):
        paths = make_plots(r, out_dir / "plots" / slug) if plots else []
        rels.append([p.relative_to(out_dir).as_posix() for p in paths])
    write_atomic(out_dir / "report.md", markdown(results_list, rels).encode())
    return out_dir / "report.md"
