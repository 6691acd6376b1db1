"""Results written as CLIP_benchmark writes them, so ``clip_benchmark build`` aggregates them with its own.

CLIP_benchmark's ``eval`` dumps one flat JSON per data set, model and task: ``{"dataset", "model",
"pretrained", "task", "metrics", "language"}`` with ``metrics`` a flat dict of numbers (its ``build`` turns
each file into one CSV row: the metrics, then the other keys, plus ``model_fullname`` = model + " " +
pretrained). Here: ``model`` is the open_clip architecture, ``pretrained`` the model's name in the reports
(the run folder, a ``--name``, or the open_clip weights). Tasks and data sets:

- ``zeroshot_retrieval`` on ``mmsar_test`` (the build's test split): ``image_retrieval_recall@K``,
  ``text_retrieval_recall@K``, ... (CLIP_benchmark's names);
- ``zeroshot_classification`` per classification set (``mmsar_chips``, each ImageFolder by its folder
  name): ``acc1``, ``acc5``, ``mean_per_class_recall``;
- ``linear_probe`` per set: ``lp_acc1``, ...; few-shot probes are ``linear_probe`` with a ``fewshot_k`` key
  (CLIP_benchmark's ``--fewshot_k``), their seed means as ``lp_acc1`` / ``lp_mean_per_class_recall``;
- ``counting`` on ``mmsar_sarcount`` (not a CLIP_benchmark task; ``build`` takes it like any other):
  ``words_acc1``, ``digits_mae``, ``regression_probe_mae``, ...

Only numbers go into ``metrics`` (per-class tables and confusion matrices stay in results.json). File
names follow CLIP_benchmark's documented template ``{dataset}_{pretrained}_{model}_{language}_{task}.json``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from d2c.writers import atomic_write_bytes

KEYS = ("dataset", "model", "pretrained", "task", "metrics", "language")
LANGUAGE = "en"
_UNSAFE = re.compile(r"[^A-Za-z0-9_@.+=-]+")


def _numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    """The number-valued entries (NaN becomes None, as json.dump would refuse it in strict readers)."""
    out: dict[str, float | int] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[prefix + k] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def _set_name(name: str) -> str:
    return name.removeprefix("imagefolder:") if name.startswith("imagefolder:") else f"mmsar_{name}"


def records(results: dict) -> list[dict[str, Any]]:
    """CLIP_benchmark dumps for one model's results dict (as :func:`sarclip_train.eval.evaluate` returns)."""
    model = results.get("model") or {}
    arch = str(model.get("arch") or "unknown")
    pretrained = str(model.get("name") or "model")
    res = results.get("results") or {}
    out: list[dict[str, Any]] = []

    def add(dataset: str, task: str, metrics: dict, **extra) -> None:
        out.append({"dataset": dataset, "model": arch, "pretrained": pretrained, "task": task,
                    "metrics": metrics, "language": LANGUAGE, **extra})

    if "retrieval" in res:
        add(_set_name(res["retrieval"].get("dataset", "test")), "zeroshot_retrieval",
            _numbers(res["retrieval"]["metrics"]))
    for name, one in sorted((res.get("zeroshot") or {}).items()):
        add(_set_name(name), "zeroshot_classification", _numbers(one["metrics"]))
    for name, one in sorted((res.get("linear") or {}).items()):
        add(_set_name(name), "linear_probe", _numbers(one["metrics"]))
    for name, one in sorted((res.get("fewshot") or {}).items()):
        for k, m in sorted(one["metrics"].items(), key=lambda kv: int(kv[0].removeprefix("k="))):
            metrics = {"lp_acc1": m.get("acc1_mean"), "lp_mean_per_class_recall": m.get("mean_per_class_recall_mean"),
                       **_numbers({x: v for x, v in m.items() if x not in ("acc1_mean", "mean_per_class_recall_mean")})}
            add(_set_name(name), "linear_probe", metrics, fewshot_k=int(k.removeprefix("k=")))
    if "counting" in res:
        m = res["counting"]["metrics"]
        flat = _numbers({k: v for k, v in m.items() if not isinstance(v, dict)})
        for variant, sub in sorted((k, v) for k, v in m.items() if isinstance(v, dict)):
            flat.update(_numbers(sub, f"{variant}_"))
        add("mmsar_sarcount", "counting", flat)
    return out


def file_name(rec: dict[str, Any]) -> str:
    """``{dataset}_{pretrained}_{model}_{language}_{task}.json`` (few-shot: ``..._linear_probe_k{K}.json``)."""
    parts = [rec["dataset"], rec["pretrained"], rec["model"], rec["language"], rec["task"]]
    if "fewshot_k" in rec:
        parts.append(f"k{rec['fewshot_k']}")
    return "_".join(_UNSAFE.sub("-", str(p)).strip("-") or "x" for p in parts) + ".json"


def write_clip_benchmark(results: dict, out_dir: Path | str) -> list[Path]:
    """One JSON per record under ``out_dir`` (each written whole, under a temporary name first); files
    there from an earlier evaluation that this one does not write are removed, so ``build`` over the folder
    sees this evaluation only."""
    import orjson

    out_dir = Path(out_dir)
    paths = []
    for rec in records(results):
        path = out_dir / file_name(rec)
        atomic_write_bytes(path, orjson.dumps(rec, option=orjson.OPT_INDENT_2))
        paths.append(path)
    for stale in set(out_dir.glob("*.json")) - set(paths) if out_dir.is_dir() else ():
        stale.unlink(missing_ok=True)
    return sorted(paths)
