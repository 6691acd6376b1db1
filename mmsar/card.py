"""The dataset card (``README.md``) in the Hugging Face style: a YAML header that ``datasets`` and the Hub
read (configs, data files, splits, features), then what a user needs to trust the data: sources and their
licences, the class map, caption settings and counts.

Why no YAML library: the header is generated from known data, and JSON-quoted scalars are valid YAML, so
a small emitter keeps the base install free of another dependency.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

HF_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=False)


def to_yaml(obj: Any, indent: int = 0) -> list[str]:
    """Block-style YAML lines for dicts, lists and scalars."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(to_yaml(v, indent + (2 if isinstance(v, dict) else 0)))
            else:
                lines.append(f"{pad}{k}: {_scalar(v) if not isinstance(v, (dict, list)) else ('{}' if isinstance(v, dict) else '[]')}")
    elif isinstance(obj, list):
        for v in obj:
            sub = to_yaml(v, indent + 2)
            if sub:
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
    else:
        lines.append(f"{pad}{_scalar(obj)}")
    return lines


def _feature(name: str, typ: pa.DataType) -> dict[str, Any]:
    """The HF ``dataset_info.features`` entry of one Arrow field."""
    if name == "image" and pa.types.is_struct(typ):
        return {"name": name, "dtype": "image"}
    if pa.types.is_list(typ):
        inner = typ.value_type
        if pa.types.is_struct(inner):
            return {"name": name, "list": [_feature(f.name, f.type) for f in inner]}
        return {"name": name, "sequence": _dtype(inner)}
    if pa.types.is_struct(typ):
        return {"name": name, "struct": [_feature(f.name, f.type) for f in typ]}
    return {"name": name, "dtype": _dtype(typ)}


def _dtype(typ: pa.DataType) -> str:
    if pa.types.is_string(typ):
        return "string"
    if pa.types.is_binary(typ):
        return "binary"
    if pa.types.is_boolean(typ):
        return "bool"
    return str(typ)


def features(schema: pa.Schema) -> list[dict[str, Any]]:
    return [_feature(f.name, f.type) for f in schema]


SIZE_BOUNDS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
               (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a row count."""
    return next((name for bound, name in SIZE_BOUNDS if rows < bound), "n>100M")


def licence_fields(licences: list[str]) -> dict[str, str]:
    """``license`` (one SPDX-style id when every source agrees), else ``other`` with a ``license_name``
    the Hub accepts (lowercase letters, digits, '-' and '.') listing the sources' licences."""
    if len(licences) == 1:
        return {"license": licences[0]}
    slug = "-".join(re.sub(r"[^a-z0-9.]+", "-", lic.lower()).strip("-") for lic in licences)
    return {"license": "other", "license_name": f"mixed-{slug}"}


def header(info: dict[str, Any]) -> dict[str, Any]:
    """The YAML header data: ``info`` has ``name``, ``licences``, ``folders`` ({folder: {rows, bytes}})."""
    from d2c.schema import CHIP_SCHEMA, SCHEMA

    folders = info["folders"]
    licences = sorted(set(info["licences"].values()))
    configs = [
        ("default", SCHEMA, [(HF_SPLIT[s], s) for s in ("train", "val", "test")]),
        ("sarcount", SCHEMA, [("test", "sarcount"), ("train", "sarcount_train")]),
        ("chips", CHIP_SCHEMA, [(HF_SPLIT[s], f"chips/{s}") for s in ("train", "val", "test")]),
    ]
    scene_rows = sum(folders.get(f, {}).get("rows", 0) for f in ("train", "val", "test"))
    return {
        "pretty_name": info["name"],
        **licence_fields(licences),
        "size_categories": [size_category(scene_rows)],
        "task_categories": ["zero-shot-image-classification", "image-to-text", "object-detection"],
        "tags": ["sar", "remote-sensing", "synthetic-aperture-radar", "clip"],
        "configs": [{"config_name": name, "data_files": [{"split": split, "path": f"{folder}/*.parquet"}
                                                         for split, folder in parts]}
                    for name, _, parts in configs],
        "dataset_info": [{"config_name": name, "features": features(schema),
                          "splits": [{"name": split, "num_examples": folders.get(folder, {}).get("rows", 0),
                                      "num_bytes": folders.get(folder, {}).get("bytes", 0)}
                                     for split, folder in parts]}
                         for name, schema, parts in configs],
    }


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def render_card(info: dict[str, Any]) -> str:
    """The whole README.md. ``info``: name, sources (list of dicts), licences, class_map, captions,
    splits ({split: {scenes, instances, captions, classes}}), sarcount, dedupe, folders, plots."""
    lines = ["---", *to_yaml(header(info)), "---", "", f"# {info['name']}", "",
             "SAR images with captions generated from their detection boxes (d2c), assembled by `mmsar build`.",
             ""]
    if info.get("gallery"):
        lines += ["## Gallery", "", "Sample scenes: a row per source, a column per class (the most frequent), "
                  "every box drawn in its class's colour, one of the image's captions underneath.", "",
                  f"![gallery]({info['gallery']})", ""]
    lines += _loading(info["name"]) + ["## Sources", ""]
    lines += _table(["source", "format", "licence", "weight", "scenes kept", "instances kept", "rejects",
                     "exact duplicates dropped"],
                    [[s["name"], s["format"], s["licence"], s["weight"], s["scenes"], s["instances"], s["rejects"],
                      s["duplicates"]] for s in info["sources"]])
    lines += ["", "## Class map", ""]
    lines += _table(["source", "classes", "aliases"],
                    [[n, ", ".join(m["classes"]), ", ".join(f"{k} -> {v}" for k, v in m["aliases"].items()) or "-"]
                     for n, m in info["class_map"].items()])
    cap = info["captions"]
    lines += ["", "## Captions", "",
              f"{cap['per_image']} captions per image at most (identical renderings dropped), caption seed "
              f"{cap['seed']}, templates: {cap['templates'] or 'the built-in set'} "
              f"(template-set hash `{cap['template_set_hash'][:16]}`).", "", "## Splits", ""]
    classes = sorted({c for s in info["splits"].values() for c in s["classes"]})
    lines += _table(["split", "scenes", "instances", "captions", *classes],
                    [[name, s["scenes"], s["instances"], s["captions"], *(s["classes"].get(c, 0) for c in classes)]
                     for name, s in info["splits"].items()])
    sc = info["sarcount"]
    lines += ["", "## SARCount", "",
              f"Counting benchmark (RemoteCount style): one class with {sc['min_count']} to {sc['max_count']} "
              "instances, none difficult. `sarcount/_index.json` lists items with a `{n}` template.", ""]
    lines += _table(["set", *sc["counts_range"]],
                    [[name, *(h.get(str(c), 0) for c in sc["counts_range"])] for name, h in sc["histograms"].items()])
    dd = info["dedupe"]
    lines += ["", "## Duplicates", "",
              f"{dd['exact']} exact duplicate images dropped (first source in config order kept; "
              f"{dd['labels_disagree']} with disagreeing labels, listed in `_dedupe.json`); "
              f"{dd['near_groups']} near-duplicate groups (perceptual hash distance < {dd['threshold']}) "
              f"{'dropped to one image each' if dd['drop_near'] else 'kept together in one split'}.", ""]
    if info.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in info["plots"]] + [""]
    lines += ["## Licence", "", "Each source keeps its own licence (table above); check them before "
              "redistributing.", ""]
    lines += _citation(info)
    return "\n".join(lines)


def _loading(name: str) -> list[str]:
    return ["## Loading", "", "With Hugging Face `datasets` (the configs in the header: `default` scenes, "
            "`sarcount`, `chips`), from this folder or the Hub:", "", "```python",
            "from datasets import load_dataset", "",
            f'scenes = load_dataset("path/to/{name}")              # train / validation / test',
            f'chips = load_dataset("path/to/{name}", "chips")      # one object per row, with its label',
            'print(scenes["train"][0]["captions"], scenes["train"][0]["objects"])', "```", "",
            "Or any Parquet reader (pandas, polars, DuckDB): `pandas.read_parquet(\"train/\")`; "
            "`sarclip-train run --set data.train=train` trains on it.", ""]


def _citation(info: dict[str, Any]) -> list[str]:
    """A BibTeX entry for this build; the sources' own papers come first (named in the Sources table)."""
    key = re.sub(r"[^A-Za-z0-9]+", "_", info["name"]).strip("_").lower() or "mmsar"
    sources = ", ".join(s["name"] for s in info["sources"])
    return ["## Citation", "", "Cite the source datasets (table above) and this build:", "", "```bibtex",
            f"@misc{{{key},", f"  title = {{{{{info['name']}}}: captioned SAR images built with mmsar}},",
            f"  note = {{Assembled by mmsar build from {sources}}},", "}", "```", ""]
