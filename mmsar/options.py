"""How a build runs (not what it builds): one object instead of a growing argument list.

Why apart from :class:`mmsar.config.BuildConfig`: nothing here changes the output's bytes (distributor,
workers, task size, retries, progress), so none of it is in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from d2c.errors import UsageError

# The default task size is "auto": enough tasks for TASKS_PER_WORKER per worker (so workers finish
# together), never under MIN_UNIT_SCENES scenes. Why, measured (docs/benchmarks.md, "mmsar build in
# tasks"): a staging task has a fixed cost of about 0.3 s (compiling the caption templates 0.17 s,
# planning a 20,000-image COCO file again 0.11 s) against about 0.3 ms per annotation-only scene (more
# with images: hashing and reading them), so fixed 500-scene tasks cost an annotation-only build several
# times its conversion, while 500 stays a fine grain for sources with images.
MIN_UNIT_SCENES = 500
TASKS_PER_WORKER = 4


def auto_unit_scenes(units: int, workers: int) -> int:
    """The default scenes per task for ``units`` plan units in all on ``workers`` workers."""
    return max(MIN_UNIT_SCENES, -(-units // (TASKS_PER_WORKER * max(workers, 1))))


@dataclass(frozen=True)
class BuildOptions:
    """``distributor``: "local" (process pool) or "dask" (``scheduler`` address, or a LocalCluster of
    ``workers`` processes); ``unit_scenes``: scenes per staging task (None: the config's ``unit_scenes``,
    else :func:`auto_unit_scenes`); ``retries``: extra attempts of a failed task; ``progress``: see
    :class:`d2c.progress.Progress`."""

    distributor: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    unit_scenes: int | None = None
    retries: int = 2
    progress: bool | str | None = False

    def check(self) -> None:
        if self.unit_scenes is not None and self.unit_scenes < 1:
            raise UsageError(f"--unit-scenes must be >= 1, got {self.unit_scenes}")
        if self.retries < 0:
            raise UsageError(f"--retries must be >= 0, got {self.retries}")
