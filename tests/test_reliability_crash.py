"""Crashes mid-build: ``d2c convert`` and ``mmsar build`` killed (``os._exit(137)``, no clean-up, through the
``D2C_CRASH_AT=<point>:<n>`` hook in d2c/shards.py) after N rows, mid-shard and between write and rename,
then resumed: the final shards are byte-identical to an uninterrupted run (no lost, duplicated or
half-written rows), and no temporary file is left. A full disk (an injected ENOSPC) gives a clear error and
no incomplete shard under a final name."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from mmsar_helpers import config, source
from PIL import Image

from d2c.cli import main
from d2c.shards import iter_rows, read_metadata, shard_paths, verify

REPO = Path(__file__).resolve().parents[1]
SCENES = 12
ARGS = ["--format", "coco", "--shard-rows", "3", "--images-mode", "embed", "--captions-per-image", "2",
        "--keep-partial-scenes"]  # the input has a scene with a bad annotation: kept, flagged
# (crash point, n): the n-th time the point is reached. Chosen to cover a kill after the first row, in the
# middle of a shard, with a row group flushed to the temporary file, and between close and rename.
CRASHES = [("after_rows", 1), ("after_rows", 5), ("mid_shard", 2), ("before_rename", 3)]


def _dataset(root: Path) -> Path:
    """12 small scenes (one annotation-free, one bad box: a reject) in a COCO file, images embedded."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(5)
    images, anns = [], []
    for i in range(SCENES):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8)).save(buf, format="PNG")
        (root / "images" / f"s{i:02d}.png").write_bytes(buf.getvalue())
        images.append({"id": i, "file_name": f"s{i:02d}.png", "width": 32, "height": 24})
        for j in range(i % 3):
            anns.append({"id": len(anns), "image_id": i, "category_id": 1, "bbox": [2 + 9 * j, 3, 7, 5]})
    anns.append({"id": 999, "image_id": 4, "category_id": 1, "bbox": [1, 1, -3, 2]})
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    return path


def _cli(args: list) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output[-2000:]


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every shard's bytes plus the reports a reader relies on."""
    files = {p.name: p.read_bytes() for p in shard_paths(out)}
    for name in ("_manifest.json", "_rejects.jsonl", "_stats.json"):
        files[name] = (out / name).read_bytes()
    return files


def _final_shards_complete(out: Path) -> int:
    """Every shard under a final name opens, has its footer metadata and the rows it says it has."""
    rows = 0
    for p in shard_paths(out):
        meta = read_metadata(p)
        n = pq.ParquetFile(p).metadata.num_rows
        assert meta["next_item"] > meta["first_item"] and 1 <= n <= 3, (p.name, meta, n)
        assert pq.read_table(p).num_rows == n
        rows += n
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("crash")
    ann = _dataset(root / "ds")
    _cli(["convert", ann, "--out", root / "ref", *ARGS])
    return root, ann, _snapshot(root / "ref")


def _child(ann: Path, out: Path, crash: str) -> subprocess.Popen:
    env = {**os.environ, "D2C_CRASH_AT": crash}
    cmd = [sys.executable, "-c", "from d2c.cli import main; main()", "convert", str(ann), "--out", str(out), *ARGS]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 137, err.decode()[-1500:]
    return err.decode()


@pytest.mark.timeout(60)
def test_convert_killed_at_each_point_then_resumed(reference):
    root, ann, expected = reference
    assert sum(1 for k in expected if k.endswith(".parquet")) == 4
    outs = {f"{p}:{n}": root / f"k_{p}_{n}" for p, n in CRASHES}
    procs = {c: _child(ann, out, c) for c, out in outs.items()}  # the kills run side by side
    for proc in procs.values():
        assert "D2C_CRASH_AT" in _wait(proc)
    for crash, out in outs.items():
        rows_before = _final_shards_complete(out)
        assert rows_before % 3 == 0 and rows_before < SCENES - 1, crash  # only whole shards survive a kill
        if crash.startswith(("mid_shard", "before_rename")):
            assert list(out.glob(".*.tmp")), crash  # the kill left a half-written temporary file behind
        _cli(["convert", ann, "--out", out, *ARGS, "--resume"])
        assert not list(out.glob(".*.tmp")) and not list(out.glob(".*")), crash
        assert _snapshot(out) == expected, crash
        keys = [r["key"] for r in iter_rows(out, columns=["key"])]
        assert len(keys) == len(set(keys)) == SCENES, crash
        assert verify(out) == []
        stats = json.loads((out / "_stats.json").read_text())
        assert stats["invariant_holds"] and stats["instances_rejected"] == 1, crash


@pytest.mark.timeout(60)
def test_repeated_kills_then_resume(reference):
    """Killed, resumed and killed again (twice), then resumed to the end: still the same bytes."""
    root, ann, expected = reference
    out = root / "repeated"
    _wait(_child(ann, out, "after_rows:4"))
    for crash in ("before_rename:1",):
        env = {**os.environ, "D2C_CRASH_AT": crash}
        cmd = [sys.executable, "-c", "from d2c.cli import main; main()", "convert", str(ann), "--out", str(out),
               *ARGS, "--resume"]
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, timeout=60)
        assert proc.returncode == 137, proc.stderr.decode()[-1500:]
        _final_shards_complete(out)
    _cli(["convert", ann, "--out", out, *ARGS, "--resume"])
    assert _snapshot(out) == expected and not list(out.glob(".*"))


@pytest.mark.timeout(30)
def test_full_disk_gives_a_clear_error_and_no_incomplete_shard(reference, monkeypatch, tmp_path):
    """The disk fills while the second shard is written: one-line error, exit 1; the shard under a final
    name is complete, the partial one only under its temporary name, and --resume finishes the job."""
    root, ann, expected = reference
    import d2c.shards as shards_mod

    real_writer = pq.ParquetWriter
    budget = {"bytes": len(expected["ann-00000.parquet"]) + 500}

    class FullDisk(io.FileIO):
        def write(self, data) -> int:  # type: ignore[override]
            budget["bytes"] -= len(data)
            if budget["bytes"] < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    def writer(where, *args, **kwargs):
        return real_writer(FullDisk(str(where), "wb"), *args, **kwargs)

    monkeypatch.setattr(shards_mod.pq, "ParquetWriter", writer)
    out = tmp_path / "full"
    result = CliRunner().invoke(main, ["convert", str(ann), "--out", str(out), *ARGS])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert errors and "No space left on device" in errors[-1] and "Traceback" not in result.output, result.output
    finals = shard_paths(out)
    assert [p.name for p in finals] == ["ann-00000.parquet"]
    assert finals[0].read_bytes() == expected["ann-00000.parquet"]
    monkeypatch.setattr(shards_mod.pq, "ParquetWriter", real_writer)  # space freed: resume
    _cli(["convert", ann, "--out", out, *ARGS, "--resume"])
    assert _snapshot(out) == expected and not list(out.glob(".*"))


MMSAR_CONFIG = config("MMSAR-crash", 1, 3, source("toy", "coco", '"{ann}"'), top='work = "{work}"')


def _tree(out: Path) -> dict[str, bytes]:
    """Every file of a build output except the run's timings."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.suffix != ".png" and p.name not in ("_stats.json", "README.md", "_tasks.json")}


@pytest.mark.timeout(90)
def test_mmsar_build_killed_then_rerun(reference, tmp_path):
    """``mmsar build`` has no --resume flag: a rerun reuses complete staged sources and rewrites the rest.
    Killed in staging (d2c convert inside it) and in the output writing, each rerun matches a clean build."""
    from mmsar.cli import main as mmsar_main

    _, ann, _ = reference
    runs = {}
    for name in ("clean", "stage_kill", "write_kill"):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(MMSAR_CONFIG.format(work=tmp_path / f"work_{name}", ann=ann))
        runs[name] = cfg
    res = CliRunner().invoke(mmsar_main, ["build", "--config", str(runs["clean"]), "--out",
                                          str(tmp_path / "clean"), "--workers", "1"])
    assert res.exit_code == 0, res.output[-2000:]
    clean = _tree(tmp_path / "clean")
    assert any(k.startswith("train/") and k.endswith(".parquet") for k in clean)
    # staging writes 4 shards of 12 rows (hook counts 1-4 and 1-12), the build's own folders come after
    procs = {}
    for name, crash in (("stage_kill", "before_rename:2"), ("write_kill", "after_rows:14")):
        env = {**os.environ, "D2C_CRASH_AT": crash}
        cmd = [sys.executable, "-c", "from mmsar.cli import main; main()", "build", "--config", str(runs[name]),
               "--out", str(tmp_path / name), "--workers", "1"]
        procs[name] = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for name, proc in procs.items():
        _wait(proc)
        out = tmp_path / name
        assert not (out / "_manifest.json").exists()  # the manifest, written last, marks a finished build
        res = CliRunner().invoke(mmsar_main, ["build", "--config", str(runs[name]), "--out", str(out),
                                              "--workers", "1"])
        assert res.exit_code == 0 and "Traceback" not in res.output, res.output[-2000:]
        assert _tree(out) == clean, name
        assert not [p for p in out.rglob(".*") if p.is_file()], name


KILL_A_WORKER = """
import os, sys
import d2c.convert_worker as cw
real = cw._image_of
def dies_on_s07(scene):
    if scene.key.endswith("s07"):
        os._exit(9)  # as the OOM killer or a segfault in a C library would end it
    return real(scene)
cw._image_of = dies_on_s07
from d2c.cli import main
main()
"""


@pytest.mark.timeout(60)
def test_dead_worker_is_an_error_not_a_hang(reference):
    """``--workers 2`` and one worker dies: a one-line error and exit 1 (multiprocessing.Pool used to wait
    for ever), then --resume finishes with the uninterrupted run's bytes."""
    root, ann, expected = reference
    out = root / "dead_worker"
    cmd = [sys.executable, "-c", KILL_A_WORKER, "convert", str(ann), "--out", str(out), *ARGS, "--workers", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=45)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert "worker process died" in err.splitlines()[-1] and "--resume" in err.splitlines()[-1]
    _final_shards_complete(out)
    _cli(["convert", ann, "--out", out, *ARGS, "--resume", "--workers", "2"])
    assert _snapshot(out) == expected and not list(out.glob(".*"))


@pytest.mark.timeout(60)
def test_mmsar_dead_worker_is_a_clear_error():
    from d2c.errors import D2CError
    from mmsar.distributor import LocalDistributor

    with LocalDistributor(2, retries=0) as dist, pytest.raises(D2CError, match="worker process died"):
        dist.map(os._exit, [(3,), (4,)])


@pytest.mark.timeout(30)
def test_resume_rewrites_a_damaged_final_shard(reference, tmp_path):
    """A shard truncated under its final name (a partial copy, a disk fault) is not trusted by --resume:
    it and the shards after it are written again (it used to stop with an error not naming the file)."""
    import shutil

    root, ann, expected = reference
    out = tmp_path / "damaged"
    shutil.copytree(root / "ref", out)
    shard = out / "ann-00001.parquet"
    shard.write_bytes(shard.read_bytes()[: len(expected["ann-00001.parquet"]) // 2])
    _cli(["convert", ann, "--out", out, *ARGS, "--resume"])
    assert _snapshot(out) == expected and verify(out) == []


@pytest.mark.timeout(30)
def test_reading_commands_name_a_damaged_shard(reference, tmp_path):
    """``d2c inspect`` / ``export`` / ``verify`` on a folder holding a damaged shard: one line naming it,
    exit 1, no traceback (inspect used to print Arrow's traceback; export did not say which file)."""
    import shutil

    root, _, expected = reference
    out = tmp_path / "s"
    shutil.copytree(root / "ref", out)
    shard = out / "ann-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    for args in (["inspect", str(out)], ["export", str(out), str(tmp_path / "x"), "--to", "coco"],
                 ["verify", str(out)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        assert str(shard) in result.output, (args, result.output)
