"""Evaluation outputs: ``results.json``, ``report.md`` (a comparison table across models) and PNG plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import orjson

from d2c.writers import atomic_write_bytes

# (column title, path into results["results"]) for the comparison table, in display order.
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
    ("Count top-1 (words)", ("counting", "metrics", "words", "acc1")),
    ("Count top-1 (digits)", ("counting", "metrics", "digits", "acc1")),
    ("Count MAE (words)", ("counting", "metrics", "words", "mae")),
    ("Count probe MAE", ("counting", "metrics", "regression_probe", "mae")),
)


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


def compare(results_list: Sequence[dict]) -> str:
    """A Markdown table, one row per evaluated model, one column per headline metric."""
    cols = _columns(results_list)
    head = "| Model | " + " | ".join(c[0] for c in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    rows = [f"| {_get(r, ('model', 'name')) or '?'} | "
            + " | ".join(_fmt(_get(r.get("results", {}), c[1])) for c in cols) + " |" for r in results_list]
    return "\n".join([head, sep, *rows]) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Never a half-written report under its final name (d2c's temp-file-and-rename writer)."""
    atomic_write_bytes(path, data)


def to_json(obj) -> bytes:
    """Sorted, indented JSON (NaN becomes null), so equal results give equal bytes."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _details(results: dict) -> list[str]:
    lines: list[str] = []
    res = results.get("results", {})
    for name, sets in (res.get("fewshot") or {}).items():
        lines += [f"\n### Few-shot ({name})\n", "| k | top-1 mean | top-1 std | mean recall mean |", "|---:|---:|---:|---:|"]
        for k, m in sets["metrics"].items():
            lines.append(f"| {k[2:]} | {_fmt(m['acc1_mean'])} | {_fmt(m['acc1_std'])} | "
                         f"{_fmt(m['mean_per_class_recall_mean'])} |")
    if results.get("skipped"):
        lines.append("\n### Skipped\n")
        lines += [f"- {k}: {v}" for k, v in sorted(results["skipped"].items())]
    return lines


def markdown(results_list: Sequence[dict], plots: Sequence[str] = ()) -> str:
    """report.md: the comparison table, per-model details, and the plots."""
    lines = ["# SARCLIP evaluation\n", compare(results_list)]
    for r in results_list:
        lines.append(f"\n## {_get(r, ('model', 'name'))}\n")
        lines.append(f"Data: `{_get(r, ('data', 'dir'))}`, seed {r.get('seed')}, tasks: {', '.join(r.get('tasks', []))}")
        lines += _details(r)
    if plots:
        lines.append("\n## Plots\n")
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """``results.json``, ``plots/*.png`` and ``report.md`` for one model's results."""
    from sarclip_train.eval.plots import make_plots

    out_dir = Path(out_dir)
    write_atomic(out_dir / "results.json", to_json(results))
    plots = make_plots(results, out_dir / "plots")
    rel = [p.relative_to(out_dir).as_posix() for p in plots]
    write_atomic(out_dir / "report.md", markdown([results], rel).encode())
    return {"results": out_dir / "results.json", "report": out_dir / "report.md"}


def write_comparison(results_list: Sequence[dict], out_dir: Path) -> Path:
    """A top-level ``report.md`` and ``results.json`` (a list) comparing several models."""
    out_dir = Path(out_dir)
    write_atomic(out_dir / "results.json", to_json({"models": list(results_list)}))
    write_atomic(out_dir / "report.md", markdown(results_list).encode())
    return out_dir / "report.md"
