"""One function per evaluation task: load its data, extract (cached) features, compute its metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sarclip_train.eval import baselines as B
from sarclip_train.eval import counting, probes, retrieval, zeroshot
from sarclip_train.eval.datasets import (
    SARCOUNT_INDEX,
    ImageSource,
    imagefolder_source,
    load_index,
    read_shards,
    shard_source,
)
from sarclip_train.eval.features import EvalModel, FeatureCache, image_features, text_features

log = logging.getLogger(__name__)


class Skip(Exception):
    """A task cannot run on this data (the reason goes into results.json, the rest goes on)."""


def _features_by_id(model: EvalModel, src: ImageSource, cache: FeatureCache, bs: int) -> dict[str, np.ndarray]:
    ids, emb = image_features(model, src, cache, bs)
    return dict(zip(ids, emb, strict=True))


def run_retrieval(model: EvalModel, data: Path, cache: FeatureCache, bs: int) -> dict:
    folder = data / "test"
    if not folder.is_dir():
        raise Skip(f"{folder}: no test shard folder")
    src, rows = shard_source(folder, "test", ["captions"])
    feats = _features_by_id(model, src, cache, bs)
    rows = [r for r in rows if r["key"] in feats and r["captions"]]
    if not rows:
        raise Skip(f"{folder}: no decodable image with captions")
    captions = [list(r["captions"]) for r in rows]
    texts, _ = retrieval.unique_texts(captions)
    temb = text_features(model, texts, cache)
    metrics = retrieval.evaluate_retrieval(np.stack([feats[r["key"]] for r in rows]), captions,
                                           dict(zip(texts, temb, strict=True)))
    train_caps = train_captions(data)
    base = B.retrieval_baselines(captions, train_caps)
    return {"dataset": "test", "fingerprint": src.fingerprint, "metrics": metrics, "baselines": base,
            "baselines_from": "train captions" if train_caps else "test captions (no train split)",
            "beats_baselines": B.beats(metrics, base)}


def train_captions(data: Path) -> list[list[str]]:
    """The training split's caption lists (for the popularity baseline); empty without a train folder."""
    folder = data / "train"
    if not folder.is_dir():
        return []
    return [list(r["captions"] or []) for r in read_shards(folder, ["captions"])]


def chip_sets(data: Path) -> dict[str, tuple[ImageSource, list[str]]]:
    """The chip splits present under ``data/chips`` as (source, labels)."""
    out = {}
    for split in ("train", "val", "test"):
        folder = data / "chips" / split
        if folder.is_dir() and any(folder.glob("*.parquet")):
            src, rows = shard_source(folder, f"chips/{split}", ["label"])
            out[split] = (src, [r["label"] for r in rows])
    return out


def imagefolder_sets(root: Path) -> dict[str, tuple[ImageSource, list[str]]]:
    """An ImageFolder root: ``train/ val/ test/`` subfolders of class folders, or class folders (= test)."""
    root = Path(root)
    splits = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if not splits:
        splits = {"test": root}
    out = {}
    for split, folder in splits.items():
        src, labels, _ = imagefolder_source(folder, f"{root.name}/{split}")
        out[split] = (src, labels)
    return out


def _xy(model, sets, split, classes, cache, bs) -> tuple[np.ndarray, np.ndarray]:
    src, labels = sets[split]
    ids, emb = image_features(model, src, cache, bs)
    label_of = dict(zip(src.ids, labels, strict=True))
    index = {c: i for i, c in enumerate(classes)}
    keep = [j for j, i in enumerate(ids) if label_of.get(i) in index]
    if len(keep) < len(ids):
        log.warning("%s: %d images without a label left out", src.name, len(ids) - len(keep))
    return emb[keep], np.asarray([index[label_of[ids[j]]] for j in keep], dtype=np.int64)


def class_names(sets: dict) -> list[str]:
    return sorted({lab for _, labels in sets.values() for lab in labels if lab})


def _labels(sets, split: str, classes: list[str]) -> np.ndarray | None:
    """A split's class indices (no features needed), None when the split is absent."""
    if split not in sets:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[lab] for lab in sets[split][1] if lab in index], dtype=np.int64)


def _with_baselines(result: dict, base: dict, source: str) -> dict:
    result.update(baselines=base, baselines_from=source, beats_baselines=B.beats(result["metrics"], base))
    return result


def _class_baselines(sets, y_test: np.ndarray, classes: list[str]) -> tuple[dict, str]:
    train = _labels(sets, "train", classes)
    source = "majority class of the train split" if train is not None and len(train) else \
        "majority class of the test split (no train split)"
    return B.classification_baselines(y_test, train, len(classes)), source


def run_zeroshot(model, sets, cache, bs, templates) -> dict:
    if "test" not in sets:
        raise Skip("no test split")
    classes = class_names(sets)
    x, y = _xy(model, sets, "test", classes, cache, bs)
    weights = zeroshot.class_weights(lambda t: text_features(model, t, cache), classes, templates)
    out = {"fingerprint": sets["test"][0].fingerprint, "metrics": zeroshot.zeroshot_metrics(x, y, weights, classes)}
    return _with_baselines(out, *_class_baselines(sets, y, classes))


def run_fewshot(model, sets, cache, bs, ks, seeds) -> dict:
    if "train" not in sets or "test" not in sets:
        raise Skip("few-shot needs train and test splits")
    classes = class_names(sets)
    train = _xy(model, sets, "train", classes, cache, bs)
    test = _xy(model, sets, "test", classes, cache, bs)
    metrics = probes.fewshot_probe(train, test, classes, ks, seeds)
    base, source = _class_baselines(sets, test[1], classes)
    base = B.renamed(base, {"acc1": "acc1_mean", "mean_per_class_recall": "mean_per_class_recall_mean"})
    return {"metrics": metrics, "baselines": base, "baselines_from": source,
            "beats_baselines": {k: B.beats(m, base) for k, m in metrics.items()}}


def run_linear(model, sets, cache, bs, seed) -> dict:
    if "train" not in sets or "test" not in sets:
        raise Skip("linear probe needs train and test splits")
    classes = class_names(sets)
    train = _xy(model, sets, "train", classes, cache, bs)
    val = _xy(model, sets, "val", classes, cache, bs) if "val" in sets else None
    test = _xy(model, sets, "test", classes, cache, bs)
    if len(np.unique(train[1])) < 2:
        raise Skip("linear probe needs at least two classes in train")
    base, source = _class_baselines(sets, test[1], classes)
    base = B.renamed(base, {"acc1": "lp_acc1", "acc5": "lp_acc5", "mean_per_class_recall": "lp_mean_per_class_recall"})
    return _with_baselines({"metrics": probes.linear_probe(train, val, test, classes, seed=seed)}, base, source)


def _count_items(model, folder: Path, cache, bs) -> tuple[list[dict], np.ndarray]:
    """SARCount items in 1..10 with a decoded image, and their image embeddings."""
    items = load_index(folder)
    src, _ = shard_source(folder, folder.name)
    feats = _features_by_id(model, src, cache, bs)
    kept = [items[i] for i in counting.in_range(items) if items[i]["key"] in feats]
    dropped = len(items) - len(kept)
    if dropped:
        log.warning("%s: %d of %d items out of 1..10 or without an image; left out", folder, dropped, len(items))
    if not kept:
        raise Skip(f"{folder}: no usable SARCount item")
    return kept, np.stack([feats[it["key"]] for it in kept])


def run_counting(model, data: Path, cache, bs) -> dict:
    folder = data / "sarcount"
    if not (folder / SARCOUNT_INDEX).is_file():
        raise Skip(f"{folder}: no SARCount {SARCOUNT_INDEX}")
    items, x = _count_items(model, folder, cache, bs)
    true = np.asarray([int(it["count"]) for it in items])
    out: dict = {"num_items": len(items)}
    for variant in counting.VARIANTS:
        caps = [c for it in items for c in counting.count_captions(it, variant)]
        distinct = sorted(set(caps))  # templates repeat across items: embed each text once
        by_text = dict(zip(distinct, text_features(model, distinct, cache), strict=True))
        temb = np.stack([by_text[c] for c in caps]).reshape(len(items), len(counting.NUMBERS), -1)
        pred = counting.predict_counts(x, temb)
        out[variant] = counting.counting_metrics(true, pred)
        out[variant].update(true=true.tolist(), pred=pred.tolist())
    train_folder = data / "sarcount_train"
    train_counts: list[int] = []
    if (train_folder / SARCOUNT_INDEX).is_file():
        titems, tx = _count_items(model, train_folder, cache, bs)
        train_counts = [int(it["count"]) for it in titems]
        reg = probes.count_regression_probe(tx, train_counts, x, true)
        reg["true"] = true.tolist()
        out["regression_probe"] = reg
    else:
        out["regression_probe"] = {"skipped": f"{train_folder}: no SARCount-train {SARCOUNT_INDEX}"}
    base = B.counting_baselines(true, train_counts)
    judged = {k: B.beats(m, base) for k, m in out.items() if isinstance(m, dict) and "skipped" not in m}
    source = "SARCount train counts" if train_counts else "SARCount test counts (no SARCount train items)"
    return {"metrics": out, "baselines": base, "baselines_from": source, "beats_baselines": judged}


def classification_sets(data: Path, imagefolders: list[Path]) -> dict[str, dict]:
    """Named classification sets: MMSAR chips (when present) and each ImageFolder."""
    sets: dict[str, dict] = {}
    if (data / "chips").is_dir():
        chips = chip_sets(data)
        if chips:
            sets["chips"] = chips
    for root in imagefolders:
        sets[f"imagefolder:{Path(root).name}"] = imagefolder_sets(root)
    return sets


def run_tasks(model: EvalModel, names: list[str], data: Path | None, cls_sets: dict[str, dict],
              cache: FeatureCache, *, batch_size: int, templates: list[str], ks, seeds, seed: int
              ) -> tuple[dict, dict[str, str]]:
    """Every task in ``names`` over its data sets: (results, {task or task/set: reason skipped})."""
    results: dict = {}
    skipped: dict[str, str] = {}

    def attempt(label: str, fn):
        try:
            return fn()
        except Skip as exc:
            log.warning("%s: skipped: %s", label, exc)
            skipped[label] = str(exc)
            return None

    from d2c.progress import track

    for name in track(names, "evaluating", unit="tasks", logger=log):
        if name == "retrieval":
            r = attempt("retrieval", lambda: run_retrieval(model, data, cache, batch_size)) if data else None
        elif name == "counting":
            r = attempt("counting", lambda: run_counting(model, data, cache, batch_size)) if data else None
        else:
            r = {}
            for set_name, sets in cls_sets.items():
                fn = {"zeroshot": lambda s=sets: run_zeroshot(model, s, cache, batch_size, templates),
                      "fewshot": lambda s=sets: run_fewshot(model, s, cache, batch_size, ks, seeds),
                      "linear": lambda s=sets: run_linear(model, s, cache, batch_size, seed)}[name]
                one = attempt(f"{name}/{set_name}", fn)
                if one is not None:
                    r[set_name] = one
        if r:
            results[name] = r
        elif name not in skipped and not any(k.startswith(f"{name}/") for k in skipped):
            skipped[name] = "no data set for this task"
    return results, skipped
