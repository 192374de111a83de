"""``EngineHost``: the one engine of a Jupyter server, opened in the background, used off the IOLoop.

The host is created once at extension load and stored in ``web_app.settings["cavelab"]``.
Opening the dataset (seconds on big data) starts immediately in a worker thread; handlers
``await host.engine()``. Engine calls go through :meth:`EngineHost.call`, which runs them in the
host's thread pool; the exceptions are a single root lookup (``try_get_root_now``, taken only
when the read lock is free) and cheap status/metadata reads, which never wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tornado.ioloop import IOLoop

from cavelab.server.errors import CavelabError, EngineUnavailableError, NotFoundError

if TYPE_CHECKING:
    from cavelab.server.annotations.engine import AnnotationEngine
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.morphology.mesh_service import MeshService
    from cavelab.server.morphology.service import MorphologyService

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_DATASET_MESSAGE = (
    "no cavelab dataset is configured; start with `cavelab serve DATASET_DIR` "
    "or set c.CavelabConfig.dataset_dir"
)


@dataclass(frozen=True)
class HostSettings:
    """What the host needs from ``CavelabConfig`` (plain values, no traitlets)."""

    dataset_dir: str = ""
    storage_url: str | None = None
    max_merge_chunk_distance: int | None = 3
    executor_workers: int = 4
    row_limit: int = 1_000_000
    version_interval_hours: float = 0.0
    version_lifetime_days: float = 7.0
    synapse_table: str | None = "synapses"
    soma_table: str | None = "nuclei"


class EngineHost:
    """Owns the engine, its opening future and the thread pool that runs every engine call."""

    def __init__(self, settings: HostSettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, int(settings.executor_workers)), thread_name_prefix="cavelab-engine"
        )
        self._future: Future[ChunkedGraph] | None = None
        self._engine: ChunkedGraph | None = None  # set once opened: no await on the hot path
        self.open_seconds: float | None = None
        self.annotations_engine: AnnotationEngine | None = None
        self._morphology: MorphologyService | None = None
        self._morphology_lock = asyncio.Lock()
        self._meshes: MeshService | None = None
        self._meshes_lock = asyncio.Lock()

    # ------------------------------------------------------------------ opening
    @property
    def configured(self) -> bool:
        """Whether a dataset directory was configured at all."""
        return bool(self.settings.dataset_dir)

    def start(self) -> None:
        """Start opening the dataset in the background (no-op without a dataset)."""
        if self.configured and self._future is None:
            self._future = self.executor.submit(self._open)

    def _open(self) -> ChunkedGraph:
        from cavelab.server.engine.graph import ChunkedGraph

        distance = self.settings.max_merge_chunk_distance
        if distance is not None and distance < 0:
            distance = None
        t0 = time.perf_counter()
        try:
            cg = ChunkedGraph.open(
                self.settings.dataset_dir,
                storage_url=self.settings.storage_url or None,
                max_merge_chunk_distance=distance,
            )
            self.annotations_engine = self._open_annotations(cg)
            from cavelab.server.morphology.service import open_service

            self._morphology = open_service(cg)  # from now on, every edit's new L2 nodes get features
            from cavelab.server.morphology.mesh_service import open_mesh_service

            self._meshes = open_mesh_service(cg)  # ... and meshes
        except Exception as e:
            log.error("cavelab: cannot open dataset %s: %s", self.settings.dataset_dir, e)
            raise
        self.open_seconds = time.perf_counter() - t0
        log.info("cavelab: dataset %s ready in %.2fs", self.settings.dataset_dir, self.open_seconds)
        return cg

    def _open_annotations(self, cg: ChunkedGraph) -> AnnotationEngine:
        from cavelab.server.annotations.engine import AnnotationEngine

        return AnnotationEngine.open(
            cg,
            self.settings.dataset_dir,
            self.settings.storage_url or None,
            row_limit=self.settings.row_limit,
            version_lifetime_days=self.settings.version_lifetime_days,
        )

    async def annotations(self) -> AnnotationEngine:
        """The annotation engine (opened together with the graph)."""
        await self.engine()
        assert self.annotations_engine is not None
        return self.annotations_engine

    async def morphology(self, cg: ChunkedGraph) -> MorphologyService:
        """The L2-feature and skeleton service of the graph (made on first use, in the pool)."""
        if self._morphology is None:
            async with self._morphology_lock:
                if self._morphology is None:
                    from cavelab.server.morphology.service import open_service

                    self._morphology = await self.call(open_service, cg)
        return self._morphology

    def l2_features_warm(self) -> bool:
        """Whether the L2-feature worker has done its one-time start-up work (never blocks)."""
        return self._morphology is not None and self._morphology.warmed.is_set()

    async def meshes(self, cg: ChunkedGraph) -> MeshService:
        """The L2 mesh service of the graph (made on first use, in the pool)."""
        if self._meshes is None:
            async with self._meshes_lock:
                if self._meshes is None:
                    from cavelab.server.morphology.mesh_service import open_mesh_service

                    self._meshes = await self.call(open_mesh_service, cg)
        return self._meshes

    def schedule_versions(self) -> None:
        """Create versions every ``version_interval_hours`` and drop expired ones (in the pool)."""
        hours = self.settings.version_interval_hours
        if not self.configured or hours <= 0:
            return
        from tornado.ioloop import PeriodicCallback

        def tick() -> None:
            if self.ready and self.annotations_engine is not None:
                ann = self.annotations_engine
                self.executor.submit(_scheduled_version, ann)

        self._version_timer = PeriodicCallback(tick, hours * 3_600_000.0)
        self._version_timer.start()

    @property
    def ready(self) -> bool:
        """Whether the engine finished opening successfully."""
        f = self._future
        return f is not None and f.done() and f.exception() is None

    def peek(self) -> tuple[str, ChunkedGraph | None, BaseException | None]:
        """``(state, engine, error)`` without waiting; state is unconfigured/loading/error/ready."""
        if not self.configured:
            return "unconfigured", None, None
        f = self._future
        if f is None or not f.done():
            return "loading", None, None
        exc = f.exception()
        if exc is not None:
            return "error", None, exc
        return "ready", f.result(), None

    async def engine(self) -> ChunkedGraph:
        """The opened engine; waits for the background open. Raises a JSON-mappable error."""
        cg = self._engine
        if cg is not None:
            return cg
        if not self.configured:
            raise NotFoundError(NO_DATASET_MESSAGE)
        self.start()
        assert self._future is not None
        try:
            cg = await asyncio.wrap_future(self._future)
            self._engine = cg
            return cg
        except CavelabError as e:
            raise EngineUnavailableError(
                f"the dataset {self.settings.dataset_dir} could not be opened: {e.message}"
            ) from e
        except Exception as e:
            raise EngineUnavailableError(
                f"the dataset {self.settings.dataset_dir} could not be opened: "
                f"{type(e).__name__}: {e}"
            ) from e

    # -------------------------------------------------------------------- calls
    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the engine thread pool and await its result."""
        loop = IOLoop.current()
        if kwargs:
            return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))
        return await loop.run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        """Stop the pool (queued calls are dropped, running ones finish), then close the engine.

        Closing the log only after running edits finish means none is cut off half-way.
        Safe to call more than once.
        """
        self.executor.shutdown(wait=True, cancel_futures=True)
        f = self._future
        if f is not None and f.done() and f.exception() is None:
            try:
                if self.annotations_engine is not None:
                    self.annotations_engine.close()
                if self._morphology is not None:
                    self._morphology.close()
                if self._meshes is not None:
                    self._meshes.close()
                f.result().close()
            except Exception:  # closing at exit must never raise
                log.debug("cavelab: error closing the engine", exc_info=True)


def _scheduled_version(ann: AnnotationEngine) -> None:
    try:
        ann.create_version()
        ann.remove_expired_versions()
    except Exception:  # a failed scheduled version must not stop the schedule
        log.exception("cavelab: scheduled version failed")
