"""Converts started from several threads of one process (a Dask worker with two threads, an app) give the
shards each would give alone: a run's job and caption engine live in module globals (see d2c/convert.py),
so such runs take turns instead of captioning one input with another run's engine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from d2c.convert import convert
from d2c.options import ConvertOptions


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_threads_converting_at_once_give_the_bytes_of_runs_alone(tmp_path, real_samples):
    ssdd = real_samples / "SSDD_mmrotate_DOTA_COCO" / "train"
    inputs = [(real_samples / "DOTA_v1_devkit_example", "dota", 0), (ssdd, "dota", 1), (ssdd / "train.json", "coco", 2)] * 2
    # (SSDD's COCO has no class map here: every scene is partial, kept flagged)
    alone = []
    for i, (path, fmt, seed) in enumerate(inputs[:3]):
        convert(path, tmp_path / f"alone{i}", ConvertOptions(format=fmt, seed=seed, shard_rows=7,
                                                             keep_partial_scenes=True))
        alone.append(_files(tmp_path / f"alone{i}"))

    def run(i: int) -> dict[str, bytes]:
        path, fmt, seed = inputs[i]
        convert(path, tmp_path / f"thread{i}", ConvertOptions(format=fmt, seed=seed, shard_rows=7,
                                                              keep_partial_scenes=True))
        return _files(tmp_path / f"thread{i}")

    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        together = list(pool.map(run, range(len(inputs))))
    for i, files in enumerate(together):
        assert len(files) > 3
        assert files == alone[i % 3], inputs[i]
