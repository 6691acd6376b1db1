"""The shared render log (d2c/shared_renders.py): what one process publishes, another absorbs into its
caption engine, which then renders less and captions exactly as a fresh engine does; a process skips its
own records; a full log refuses records; and a two-worker conversion through it writes what one worker
writes."""

from __future__ import annotations

import multiprocessing
import os

from d2c.captions import CaptionEngine
from d2c.convert import convert
from d2c.shards import shard_paths
from d2c.shared_renders import SharedRenders
from tests.test_captions_exchange import _coco, blocks  # noqa: F401  (a fixture)


def _engine() -> CaptionEngine:
    return CaptionEngine(None, captions_per_image=5, seed=3)


def _log() -> SharedRenders:
    return SharedRenders(multiprocessing.get_context("fork").Lock(), size=1 << 22)


def test_a_published_render_is_absorbed_by_another_process_only(blocks):  # noqa: F811
    log = _log()
    first = _engine()
    first.caption_block(blocks[0])
    assert log.publish(first.export_renders(), origin=os.getpid() + 1)  # as if from another worker
    assert log.publish(b"")  # nothing to publish is not a failure
    second, fresh = _engine(), _engine()
    assert log.absorb(second) == first.cache_size > 0
    assert log.absorb(second) == 0  # read once: the position moved on
    assert second.caption_block(blocks[1]) == fresh.caption_block(blocks[1])
    assert second.cache_size < fresh.cache_size
    second.caption_block(blocks[2])
    log.publish(second.export_renders())  # this process's own record: never absorbed here
    assert log.absorb(_engine()) == 0


def test_a_full_log_refuses_records(blocks):  # noqa: F811
    engine = _engine()
    engine.caption_block(blocks[0])
    blob = engine.export_renders()
    log = SharedRenders(multiprocessing.get_context("fork").Lock(), size=len(blob) + 8)  # no room for a header
    assert not log.publish(blob, origin=1)
    assert log.absorb(_engine()) == 0


def test_absorbed_across_a_fork(blocks):  # noqa: F811
    log = _log()
    pid = os.fork()
    if pid == 0:  # the child publishes what it rendered, as a pool worker does after its task
        child = _engine()
        child.caption_block(blocks[0])
        os._exit(0 if log.publish(child.export_renders()) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    parent, alone = _engine(), _engine()
    alone.caption_block(blocks[0])
    assert log.absorb(parent) == alone.cache_size  # every render the child made
    assert parent.caption_block(blocks[0]) == alone.caption_block(blocks[0]) and parent.cache_size == 0


def test_two_workers_sharing_renders_write_what_one_writes(tmp_path, monkeypatch):
    from d2c import convert_worker

    ann = _coco(tmp_path / "ann.json", 3000, seed=9)
    monkeypatch.setattr(convert_worker, "CHUNK_BLOCKS", 250)  # a dozen tasks and more: the workers take turns
    absorbed = tmp_path / "absorbed.txt"
    real_absorb = SharedRenders.absorb

    def absorb(self, engine):  # runs in the forked workers: note what each import added
        added = real_absorb(self, engine)
        with open(absorbed, "a") as fh:
            fh.write(f"{added}\n")
        return added

    monkeypatch.setattr(SharedRenders, "absorb", absorb)
    outs = []
    for w in (1, 2):
        outs.append(tmp_path / f"out{w}")
        convert(ann, out=outs[-1], format="coco", workers=w, progress=False, shard_rows=500)
    a, b = shard_paths(outs[0]), shard_paths(outs[1])
    assert len(a) == 6 and [x.read_bytes() for x in a] == [y.read_bytes() for y in b]
    counts = [int(n) for n in absorbed.read_text().split()]
    assert len(counts) == len(convert_worker._spans(3000, 250, 2)) and sum(counts) > 0  # a look per task; renders did travel


def test_a_refused_mapping_means_no_sharing_not_a_failure(tmp_path, monkeypatch):
    from d2c import shared_renders

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(shared_renders.mmap, "mmap", refuse)
    assert SharedRenders.made(multiprocessing.get_context("fork")) is None
    ann = _coco(tmp_path / "ann.json", 400, seed=4)
    outs = [tmp_path / "one", tmp_path / "two"]
    for w, out in zip((1, 2), outs, strict=True):
        convert(ann, out=out, format="coco", workers=w, progress=False, shard_rows=150)
    assert [p.read_bytes() for p in shard_paths(outs[0])] == [p.read_bytes() for p in shard_paths(outs[1])]
