"""Frozen features: one model interface for SARCLIP checkpoints and open_clip baselines, batched
extraction, and an on-disk cache keyed by the model's checkpoint sha256 and the data's shard checksums.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarclip_train.eval.datasets import ImageSource, file_sha256

log = logging.getLogger(__name__)


@dataclass
class EvalModel:
    """What the evaluation needs of a model: numpy encoders and a name and fingerprint for the cache.

    ``fingerprint`` None disables caching (an in-memory model whose weights we cannot name)."""

    name: str
    encode_images: Callable[[list[np.ndarray]], np.ndarray]
    encode_texts: Callable[[list[str]], np.ndarray]
    fingerprint: str | None
    info: dict


def _to_numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def wrap_model(model, name: str = "model", fingerprint: str | None = None, info: dict | None = None) -> EvalModel:
    """Wrap any object with ``encode_image(list of images)`` and ``encode_text(list of str)``."""
    import torch

    def images(batch: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return _normalise(_to_numpy(model.encode_image(batch)))

    def texts(batch: list[str]) -> np.ndarray:
        with torch.no_grad():
            return _normalise(_to_numpy(model.encode_text(batch)))

    return EvalModel(name, images, texts, fingerprint, info or {"name": name})


def load_checkpoint_model(checkpoint: str | Path, device: str | None = None) -> EvalModel:
    """A SARCLIP checkpoint through ``sarclip_train.load``, fingerprinted by the file's sha256."""
    import sarclip_train

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    kwargs = {"device": device} if device else {}
    model = sarclip_train.load(str(path), **kwargs)
    sha = file_sha256(path) if path.is_file() else hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    arch = getattr(getattr(model, "info", None), "arch", None)
    name = checkpoint_name(path)
    # ":luma": features of 8-bit colour input are of its luminance (not min-max stretched as before)
    return wrap_model(model, name, f"sarclip:{sha}:luma",
                      {"name": name, "kind": "sarclip", "arch": arch, "checkpoint": str(path), "sha256": sha})


def checkpoint_name(path: Path) -> str:
    """A checkpoint's name in reports: ``RUN`` for ``RUN/checkpoints/final.pt`` (every run's last checkpoint
    has that file name), ``RUN-step-N`` for its step checkpoints, else the file's stem."""
    path = Path(path)
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        run = path.parent.parent.resolve().name
        return run if path.stem == "final" else f"{run}-{path.stem}"
    return path.stem


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _local_dir(spec: str) -> Path | None:
    """The folder of a ``local-dir:PATH`` spec, or of a spec that is itself a folder (a ``sarclip-train
    export``); None otherwise."""
    folder = Path(spec.removeprefix("local-dir:"))
    has_config = (folder / "open_clip_config.json").is_file()
    if spec.startswith("local-dir:") and not has_config:
        raise FileNotFoundError(f"{folder}: no open_clip_config.json (not an open_clip local-dir model)")
    return folder if has_config else None


def _sidecar_preprocess(weights: Path):
    """The transform a ``sarclip-train export --format state-dict`` file records in ``<file>.json``."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    side = weights.with_name(weights.name + ".json")
    if not side.is_file():
        return None, None
    cfg = json.loads(side.read_text(encoding="utf-8"))
    pp = cfg.get("preprocess_cfg")
    return (image_transform_v2(PreprocessCfg(**pp), is_train=False), pp) if pp else (None, None)


def load_openclip_model(spec: str, device: str = "cpu") -> EvalModel:
    """``ARCH[:PRETRAINED_OR_PATH]`` or ``local-dir:FOLDER`` (or just FOLDER): an open_clip model, its weights
    from a local file, a local-dir folder or open_clip's own cache for a pretrained tag (never downloaded:
    HF_HUB_OFFLINE is set). Preprocessing is the model's recorded one: a local-dir folder's
    ``preprocess_cfg``, a weights file's ``<file>.json`` sidecar, else open_clip's default for the arch."""
    import open_clip
    import torch
    from PIL import Image

    from sarclip_train.openclip_quiet import quiet_open_clip

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sarclip_train.model import resolve_arch

    folder = _local_dir(spec)
    recorded = None
    gray = False
    if folder is not None:
        arch = f"local-dir:{folder}"
        try:
            with quiet_open_clip():
                model, _, preprocess = open_clip.create_model_and_transforms(arch, device=device)
                tokenizer = open_clip.get_tokenizer(arch)
        except Exception as exc:  # noqa: BLE001 - open_clip raises many types for a broken folder
            raise ValueError(f"open_clip {arch}: cannot load ({_first_line(exc)})") from None
        cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
        recorded, gray = cfg.get("preprocess_cfg"), "sarclip" in cfg
        weights_files = sorted(p for p in folder.iterdir() if p.suffix in {".bin", ".pth", ".safetensors"})
        sha = file_sha256(weights_files[0]) if weights_files else "random-init"
        name, weights = f"openclip-{folder.resolve().name}", str(folder)
    else:
        arch, _, weights = spec.partition(":")
        arch = resolve_arch(arch)  # open_clip names, the shipped configs, or a JSON config path
        with quiet_open_clip():
            tokenizer = open_clip.get_tokenizer(arch)
        if weights and Path(weights).is_file():
            with quiet_open_clip():
                model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, device=device)
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:  # code in it, or damaged
                raise ValueError(f"open_clip {arch}:{weights}: refused by the weights-only loader or unreadable "
                                 f"({_first_line(exc)})") from None
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            state = {k.removeprefix("module."): v for k, v in state.items()}
            model.load_state_dict(state)
            sha = file_sha256(Path(weights))
            side_preprocess, recorded = _sidecar_preprocess(Path(weights))
            preprocess, gray = side_preprocess or preprocess, side_preprocess is not None
        else:
            try:
                with quiet_open_clip():
                    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights or None,
                                                                                 device=device)
            except Exception as exc:  # noqa: BLE001 - open_clip raises many types for a tag it cannot find offline
                raise ValueError(f"open_clip {arch}:{weights}: cannot load these weights offline "
                                 f"({_first_line(exc)})") from None
            sha = weights or "random-init"
        name = f"openclip-{arch}" + (f"-{Path(weights).stem}" if weights else "")
    model.eval()

    def to_rgb(im: np.ndarray):
        # a SARCLIP export sees what the toolkit sees: the luminance, replicated to three channels
        from sarclip_train.inference import to_gray

        return to_gray(im).convert("RGB") if gray else Image.fromarray(np.asarray(im)).convert("RGB")

    def images(batch: list[np.ndarray]) -> np.ndarray:
        x = torch.stack([preprocess(to_rgb(im)) for im in batch]).to(device)
        with torch.no_grad():
            return _normalise(_to_numpy(model.encode_image(x)))

    def texts(batch: list[str]) -> np.ndarray:
        with torch.no_grad():
            return _normalise(_to_numpy(model.encode_text(tokenizer(batch).to(device))))

    fingerprint = f"openclip:{arch}:{sha}"
    if recorded:  # the recorded preprocessing is part of what the features depend on
        pp = json.dumps([recorded, gray], sort_keys=True).encode()
        fingerprint += f":pp-{hashlib.sha256(pp).hexdigest()[:16]}"
    return EvalModel(name, images, texts, fingerprint,
                     {"name": name, "kind": "open_clip", "arch": arch, "weights": weights or None, "sha256": sha,
                      "preprocess": recorded})


class FeatureCache:
    """``.npz`` files under ``root/<model fp>/``; written to a temp file and renamed, so never half-written."""

    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root is not None else None

    def _path(self, model: EvalModel, key: str) -> Path | None:
        if self.root is None or model.fingerprint is None:
            return None
        mdir = hashlib.sha256(model.fingerprint.encode()).hexdigest()[:24]
        return self.root / mdir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"

    def get(self, model: EvalModel, key: str) -> dict | None:
        path = self._path(model, key)
        if path is None or not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key or str(z["model"]) != model.fingerprint:
                return None
            return {"ids": [str(s) for s in z["ids"]], "emb": z["emb"]}

    def put(self, model: EvalModel, key: str, ids: Sequence[str], emb: np.ndarray) -> None:
        path = self._path(model, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, ids=np.asarray(list(ids), dtype=str), emb=np.asarray(emb, np.float32),
                         key=np.asarray(key), model=np.asarray(model.fingerprint))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def image_features(model: EvalModel, source: ImageSource, cache: FeatureCache,
                   batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """(ids decoded, (N, D) float32 embeddings) for a source, from the cache when present."""
    key = f"images:{source.fingerprint}"
    hit = cache.get(model, key)
    if hit is not None:
        log.info("%s: %s features from cache", model.name, source.name)
        return hit["ids"], hit["emb"]
    from d2c.progress import Progress

    ids: list[str] = []
    chunks: list[np.ndarray] = []
    with Progress(f"{model.name}: {source.name}", len(source.ids), unit="images", logger=log) as bar:
        for idx, imgs in source.batches(batch_size):
            chunks.append(np.asarray(model.encode_images(imgs), np.float32))
            ids.extend(source.ids[i] for i in idx)
            bar.update(idx[-1] + 1 if idx else bar.completed)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    cache.put(model, key, ids, emb)
    return ids, emb


def text_features(model: EvalModel, texts: Sequence[str], cache: FeatureCache,
                  batch_size: int = 256) -> np.ndarray:
    """(T, D) float32 embeddings of ``texts`` in order, cached by a sha256 of the text list."""
    texts = list(texts)
    key = "texts:" + hashlib.sha256("\0".join(texts).encode()).hexdigest() + f":{len(texts)}"
    hit = cache.get(model, key)
    if hit is not None:
        return hit["emb"]
    chunks = [np.asarray(model.encode_texts(texts[i:i + batch_size]), np.float32)
              for i in range(0, len(texts), batch_size)]
    emb = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    cache.put(model, key, [], emb)
    return emb
