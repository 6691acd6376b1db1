"""How a build runs (not what it builds): one object instead of a growing argument list.

Why apart from :class:`mmsar.config.BuildConfig`: nothing here changes the output's bytes (distributor,
workers, task size, retries, progress), so none of it is in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from d2c.errors import UsageError

# scenes (plan units) per staging task; from docs/benchmarks.md ("mmsar build tasks"): small enough that
# a 3,000-scene source gives both workers of a 2-core machine work, large enough that a task's fixed cost
# (planning the input again, starting convert) stays under a tenth of its time
DEFAULT_UNIT_SCENES = 500


@dataclass(frozen=True)
class BuildOptions:
    """``distributor``: "local" (process pool) or "dask" (``scheduler`` address, or a LocalCluster of
    ``workers`` processes); ``unit_scenes``: scenes per staging task (None: the config's ``unit_scenes``,
    else :data:`DEFAULT_UNIT_SCENES`); ``retries``: extra attempts of a failed task; ``progress``: see
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
