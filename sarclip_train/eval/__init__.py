"""Evaluation of SARCLIP and open_clip baselines: retrieval, zero-shot, few-shot, linear probe, counting.

``evaluate`` runs the chosen tasks on an ``mmsar build`` output (and ImageFolder sets), writes
``results.json``, ``report.md``, plots and CLIP_benchmark's per-task JSON files (``clip_benchmark/``) to
``out_dir`` and returns the results dict. Metrics are pure
functions on numpy embeddings (``retrieval``, ``zeroshot``, ``probes``, ``counting``); features are
extracted once per model and data set and cached (``features``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TASKS = ("retrieval", "zeroshot", "fewshot", "linear", "counting")
log = logging.getLogger(__name__)


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """``"retrieval,zeroshot"`` or a list -> validated task names in canonical order (None = all)."""
    if tasks is None:
        return list(TASKS)
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or names}; choose from {', '.join(TASKS)}")
    return [t for t in TASKS if t in names]


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def as_eval_model(model_or_checkpoint: Any, device: str | None = None):
    """An EvalModel from an EvalModel, a checkpoint path, ``openclip:ARCH[:WEIGHTS]``, or a loaded model."""
    from sarclip_train.eval.features import EvalModel, load_checkpoint_model, load_openclip_model, wrap_model

    if isinstance(model_or_checkpoint, EvalModel):
        return model_or_checkpoint
    if isinstance(model_or_checkpoint, str) and model_or_checkpoint.startswith("openclip:"):
        return load_openclip_model(model_or_checkpoint.removeprefix("openclip:"), device or default_device())
    if isinstance(model_or_checkpoint, (str, Path)):
        return load_checkpoint_model(model_or_checkpoint, device or default_device())
    fp = getattr(model_or_checkpoint, "fingerprint", None)
    return wrap_model(model_or_checkpoint, getattr(model_or_checkpoint, "name", "model"), fp)


def find_train_log(checkpoint: str | Path | None) -> Path | None:
    """The ``log.jsonl`` of the run that wrote ``checkpoint`` (``RUN_OUT/checkpoints/NAME.pt`` or
    ``RUN_OUT/NAME.pt``), None when there is none."""
    if not checkpoint:
        return None
    ckpt = Path(checkpoint)
    for run_dir in (ckpt.parent.parent, ckpt.parent) if ckpt.parent.name == "checkpoints" else (ckpt.parent,):
        if (run_dir / "log.jsonl").is_file():
            return run_dir / "log.jsonl"
    return None


def evaluate(
    model_or_checkpoint: Any,
    data_dir: Path | str | None,
    tasks: str | Sequence[str] | None = None,
    out_dir: Path | str | None = None,
    *,
    imagefolders: Sequence[Path | str] = (),
    seed: int = 0,
    cache_dir: Path | str | None = None,
    batch_size: int = 64,
    prompts: Path | str | None = None,
    fewshot_ks: Sequence[int] | None = None,
    fewshot_seeds: Sequence[int] | None = None,
    device: str | None = None,
    train_log: Path | str | None = None,
) -> dict:
    """Run ``tasks`` and return the results dict (written to ``out_dir/results.json`` when given).

    A task whose data is missing is recorded under ``skipped`` with the reason; the others still run.
    The feature cache defaults to ``out_dir/.feature-cache`` (none without ``out_dir``); ``device``
    (default: cuda when available) applies to models loaded here from a path or spec. ``train_log`` is the
    training run's ``log.jsonl`` for the report's loss curve; by default it is found from the checkpoint
    (``RUN_OUT/checkpoints/final.pt`` -> ``RUN_OUT/log.jsonl``).
    """
    from sarclip_train.eval import probes
    from sarclip_train.eval import tasks as T
    from sarclip_train.eval.features import FeatureCache
    from sarclip_train.eval.zeroshot import load_templates

    names = parse_tasks(tasks)
    model = as_eval_model(model_or_checkpoint, device)
    data = Path(data_dir) if data_dir is not None else None
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found")
    if cache_dir is None and out_dir is not None:
        cache_dir = Path(out_dir) / ".feature-cache"
    cache = FeatureCache(cache_dir)
    templates = load_templates(prompts)
    ks = tuple(fewshot_ks or probes.FEWSHOT_KS)
    seeds = tuple(fewshot_seeds or tuple(seed + s for s in probes.FEWSHOT_SEEDS))
    cls_sets = T.classification_sets(data, list(imagefolders)) if data else \
        {f"imagefolder:{Path(r).name}": T.imagefolder_sets(Path(r)) for r in imagefolders}
    results, skipped = T.run_tasks(model, names, data, cls_sets, cache, batch_size=batch_size,
                                   templates=templates, ks=ks, seeds=seeds, seed=seed)
    out = {
        "model": model.info,
        "data": {"dir": str(data) if data else None, "imagefolders": [str(p) for p in imagefolders]},
        "seed": seed,
        "tasks": names,
        "results": results,
        "skipped": skipped,
    }
    log_file = Path(train_log) if train_log is not None else find_train_log(model.info.get("checkpoint"))
    if log_file is not None and log_file.is_file():
        out["train_log"] = str(log_file)
    if out_dir is not None:
        from sarclip_train.eval.clip_benchmark import write_clip_benchmark
        from sarclip_train.eval.report import write_report

        write_report(out, Path(out_dir))
        write_clip_benchmark(out, Path(out_dir) / "clip_benchmark")
    return out
