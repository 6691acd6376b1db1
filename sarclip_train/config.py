"""Training configuration: dataclasses loaded from TOML, with ``--set section.key=value`` overrides.

Every field is typed; loading checks names and types so a typo fails before any tensor is built, with a
message naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2c.errors import UsageError

MERGERS = ("gate", "zero_out", "stitch")  # AnyReader's mergers (sarclip_train/anyreader.py)


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # shard files or folders (SCHEMA)
    seed: int = 0  # data order, captions and augmentation are functions of (seed, epoch, row)
    workers: int = 2  # DataLoader worker processes per rank
    shuffle_buffer: int = 256  # rows; 0 = no shuffle beyond the row-group order
    tail: str = "drop"  # "drop" the rows that do not fill a batch on every rank, or "wrap" to the start
    augment: bool = False  # flips / 90-degree rotations with captions re-rendered from the moved objects
    caption_seed: int = 0  # CaptionEngine seed for re-rendered captions
    norm_sample_rows: int = 256  # rows read to compute normalisation stats for from-scratch models


@dataclass
class ModelConfig:
    arch: str = "sarclip-tiny-vit"  # open_clip architecture name or path to a JSON model config
    pretrained: str = ""  # "" = random init; an open_clip tag (needs network) or a local checkpoint file
    anyreader: bool = True  # false = plain letterbox-resize baseline on the same backbone
    image_size: int = 0  # baseline input size (0 = the architecture's); position embeddings interpolated
    max_tiles: int = 6  # AnyReader tile grid budget per image (1..36)
    tile_cap: int = 0  # max tiles per batch over all images (0 = batch_size * max_tiles)
    pool_queries: int = 4  # learned pooling queries of the tile merger
    pos_hidden: int = 64  # width of the tile-position MLP
    merger: str = "gate"  # how tiles join: "gate" (a learned scalar from 0), "zero_out" (a zero-initialised output layer) or "stitch" (ResNet: tile feature maps joined, then the encoder's own pool)
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory, slower)
    freeze_image: bool = False  # freeze the open_clip visual tower (AnyReader merger still trains)
    freeze_text: bool = False  # freeze the open_clip text tower


@dataclass
class LossConfig:
    kind: str = "clip"  # "clip" (InfoNCE) or "siglip"
    mask_duplicate_texts: bool = True  # identical captions in a batch are not negatives (clip: masked; siglip: positives)


@dataclass
class OptimConfig:
    lr: float = 5e-4  # peak AdamW learning rate (after warmup)
    weight_decay: float = 0.1  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # AdamW betas
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 10  # linear warmup, in optimizer steps
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 0.0  # 0 = off
    gate_lr_scale: float = 100.0  # the AnyReader gate's learning rate = lr x this (it starts at zero)


@dataclass
class RunConfig:
    out: str = "runs/sarclip"  # checkpoints, logs
    batch_size: int = 32  # per rank, per micro-batch
    accum_steps: int = 1  # micro-batches per optimizer step
    epochs: int = 1  # passes over data.train
    max_steps: int = 0  # optimizer steps; 0 = run all epochs
    seed: int = 0  # model init and torch RNG
    device: str = "auto"  # "auto", "cpu", "cuda"
    precision: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "bf16", "fp32"
    checkpoint_every: int = 0  # optimizer steps; 0 = only at the end
    keep_checkpoints: int = 2  # step checkpoints kept besides the final one
    log_every: int = 1  # optimizer steps between lines of the run's log.jsonl
    progress: bool = True  # progress bar on a terminal, a log line every few seconds off one
    tensorboard: bool = False  # also write TensorBoard events under run.out
    threads: int = 0  # torch.set_num_threads; 0 = leave as is
    resume: str = ""  # "", "latest" or a checkpoint path


@dataclass
class EvalConfig:
    data: str = ""  # an `mmsar build` output folder; "" = no evaluation after training
    tasks: str = "retrieval,zeroshot,fewshot,linear,counting"
    out: str = ""  # "" = <run.out>/eval
    imagefolders: list[str] = field(default_factory=list)  # extra ImageFolder-style classification sets


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<config>") -> TrainConfig:
        """Every problem of ``data`` is reported at once (one line each, naming the key), not the first."""
        cfg = cls()
        errors: list[str] = []
        for section, values in data.items():
            if section not in _SECTIONS:
                errors.append(f"{where}: unknown section [{section}]{_did_you_mean(section, _SECTIONS)} "
                              f"(sections: {', '.join(_SECTIONS)})")
            elif not isinstance(values, dict):
                errors.append(f"{where}: [{section}] must be a table, got {values!r}")
            else:
                for key, value in values.items():
                    try:
                        _assign(cfg, f"{section}.{key}", value, where)
                    except UsageError as exc:
                        errors.append(str(exc))
        if not errors:
            errors = problems(cfg, where)
        _raise(errors)
        return cfg

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text), "<checkpoint config>")


_SECTIONS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(value: Any, tp: Any, name: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list,):
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise UsageError(f"{where}: {name} must be a list, got {value!r}")
        return [_coerce(v, item_tp, name, where) for v in value]
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where}: {name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where}: {name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UsageError(f"{where}: {name} must be a string, got {value!r}")
        return value
    return value


def _assign(cfg: TrainConfig, dotted: str, value: Any, where: str) -> None:
    section, _, key = dotted.partition(".")
    if section not in _SECTIONS or not key:
        raise UsageError(f"{where}: unknown key {dotted!r} (use section.key, sections: {', '.join(_SECTIONS)})")
    obj = getattr(cfg, section)
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise UsageError(f"{where}: unknown key {dotted!r}{_did_you_mean(key, hints)} "
                         f"(known: {', '.join(sorted(hints))})")
    setattr(obj, key, _coerce(value, hints[key], dotted, where))


def _parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, lists, quoted strings), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    errors = []
    for item in overrides:
        if "=" not in item:
            errors.append(f"--set {item!r}: expected section.key=value")
            continue
        key, _, text = item.partition("=")
        try:
            _assign(cfg, key.strip(), _parse_value(text.strip()), f"--set {item}")
        except UsageError as exc:
            errors.append(str(exc))
    _raise(errors or problems(cfg, "--set"))
    return cfg


def _did_you_mean(name: str, known: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _raise(errors: list[str]) -> None:
    """One UsageError listing every problem, a line each."""
    if errors:
        raise UsageError("\n".join(errors))


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML file (relative ``data.train``, ``run.out``, ``eval.data`` and ``eval.out`` paths resolve
    against the file's folder; ``--set`` values are taken as given, relative to the working directory)."""
    if path is None:
        cfg = TrainConfig()
    else:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{p}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{p}: invalid TOML: {e}") from None
        cfg = TrainConfig.from_dict(data, str(p))
        cfg.data.train = [str((p.parent / t).resolve()) if not Path(t).is_absolute() else t for t in cfg.data.train]
        for sec, key in (("eval", "data"), ("eval", "out"), ("run", "out")):
            value = getattr(getattr(cfg, sec), key)
            if value and not Path(value).is_absolute():
                setattr(getattr(cfg, sec), key, str((p.parent / value).resolve()))
    return apply_overrides(cfg, overrides or [])


def validate(cfg: TrainConfig, where: str) -> None:
    """Raise one UsageError listing every out-of-range value."""
    _raise(problems(cfg, where))


def problems(cfg: TrainConfig, where: str) -> list[str]:
    """Every out-of-range value of ``cfg``, one message each naming its key."""
    checks = [
        (1 <= cfg.model.max_tiles <= 36, f"model.max_tiles must be in 1..36, got {cfg.model.max_tiles}"),
        (cfg.model.tile_cap >= 0, "model.tile_cap must be >= 0"),
        (cfg.model.pool_queries >= 1, "model.pool_queries must be >= 1"),
        (cfg.model.merger in MERGERS, f"model.merger must be one of {'/'.join(MERGERS)}, got {cfg.model.merger!r}"),
        (cfg.model.image_size >= 0, "model.image_size must be >= 0"),
        (cfg.loss.kind in ("clip", "siglip"), f"loss.kind must be 'clip' or 'siglip', got {cfg.loss.kind!r}"),
        (cfg.data.tail in ("drop", "wrap"), f"data.tail must be 'drop' or 'wrap', got {cfg.data.tail!r}"),
        (cfg.data.workers >= 0, "data.workers must be >= 0"),
        (cfg.data.shuffle_buffer >= 0, "data.shuffle_buffer must be >= 0"),
        (cfg.run.batch_size >= 1, "run.batch_size must be >= 1"),
        (cfg.run.accum_steps >= 1, "run.accum_steps must be >= 1"),
        (cfg.run.epochs >= 1, "run.epochs must be >= 1"),
        (cfg.run.max_steps >= 0, "run.max_steps must be >= 0"),
        (cfg.run.device in ("auto", "cpu", "cuda"), f"run.device must be auto/cpu/cuda, got {cfg.run.device!r}"),
        (cfg.run.precision in ("auto", "bf16", "fp32"), f"run.precision must be auto/bf16/fp32, got {cfg.run.precision!r}"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (len(cfg.optim.betas) == 2, "optim.betas needs two numbers"),
    ]
    return [f"{where}: {msg}" for ok, msg in checks if not ok]


def config_keys() -> list[tuple[str, str, str]]:
    """(section.key, default, help) of every config key, from the dataclasses above: the defaults from
    the fields, the help from each field's trailing comment (so ``run --help`` cannot drift from them)."""
    import inspect
    import re

    out = []
    for section in _SECTIONS.values():
        cls = section.default_factory  # type: ignore[misc]
        comments = {}
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+):[^#]*#\s*(.*)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
        inst = cls()
        for f in dataclasses.fields(cls):
            out.append((f"{section.name}.{f.name}", json.dumps(getattr(inst, f.name)), comments.get(f.name, "")))
    return out
