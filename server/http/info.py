"""Info service (``<base_url>cave/info/api/v2/...``): the datastack and aligned-volume documents."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tornado.web import authenticated

from cavelab.server.errors import NotFoundError
from cavelab.server.http import documents
from cavelab.server.http.base import CavelabHandler

if TYPE_CHECKING:
    from cavelab.server.engine.meta import DatasetMeta


class InfoHandler(CavelabHandler):
    """Shared lookups of the info service."""

    async def meta(self) -> DatasetMeta:
        return (await self.engine()).meta

    async def datastack(self, name: str) -> DatasetMeta:
        meta = await self.meta()
        if name != meta.name:
            raise NotFoundError(
                f"unknown datastack {name!r}; this server serves {meta.name!r}", datastack=name
            )
        return meta

    async def aligned_volume(self, name: str) -> DatasetMeta:
        meta = await self.meta()
        if name != meta.name:
            raise NotFoundError(
                f"unknown aligned volume {name!r}; this server serves {meta.name!r}",
                aligned_volume=name,
            )
        return meta


class DatastackFullHandler(InfoHandler):
    """``GET info/api/v2/datastack/full/{ds}``: the datastack document with ``local_server``."""

    @authenticated
    async def get(self, datastack: str) -> None:
        meta = await self.datastack(datastack)
        st = self.host.settings
        self.write_json(
            documents.datastack_info(
                self.cave_url(), meta, st.synapse_table, st.soma_table, self.graphene_base()
            )
        )


class DatastacksHandler(InfoHandler):
    """``GET info/api/v2/datastacks``: the one datastack name."""

    @authenticated
    async def get(self) -> None:
        self.write_json([(await self.meta()).name])


class ImageSourcesHandler(InfoHandler):
    """``GET info/api/v2/datastack/{ds}/image_sources``: no image mirrors (no imagery yet)."""

    @authenticated
    async def get(self, datastack: str) -> None:
        await self.datastack(datastack)
        self.write_json([])


class AlignedVolumesHandler(InfoHandler):
    """``GET info/api/v2/aligned_volume``: the one aligned volume name."""

    @authenticated
    async def get(self) -> None:
        self.write_json([(await self.meta()).name])


class AlignedVolumeByIdHandler(InfoHandler):
    """``GET info/api/v2/aligned_volume/id/{id}``."""

    @authenticated
    async def get(self, av_id: str) -> None:
        meta = await self.meta()
        if av_id.strip() != str(documents.ALIGNED_VOLUME_ID):
            raise NotFoundError(
                f"unknown aligned volume id {av_id!r}; this server has id {documents.ALIGNED_VOLUME_ID}"
            )
        self.write_json(documents.aligned_volume(meta))


class AlignedVolumeHandler(InfoHandler):
    """``GET info/api/v2/aligned_volume/{av}``."""

    @authenticated
    async def get(self, name: str) -> None:
        self.write_json(documents.aligned_volume(await self.aligned_volume(name)))


class AlignedVolumeDatastacksHandler(InfoHandler):
    """``GET info/api/v2/aligned_volume/{av}/datastacks``."""

    @authenticated
    async def get(self, name: str) -> None:
        self.write_json([(await self.aligned_volume(name)).name])


_SEG = r"([^/]+)"

INFO_ROUTES: list[tuple[str, type]] = [
    (rf"info/api/v2/datastack/full/{_SEG}", DatastackFullHandler),
    (r"info/api/v2/datastacks", DatastacksHandler),
    (rf"info/api/v2/datastack/{_SEG}/image_sources", ImageSourcesHandler),
    (r"info/api/v2/aligned_volume", AlignedVolumesHandler),
    (rf"info/api/v2/aligned_volume/id/{_SEG}", AlignedVolumeByIdHandler),
    (rf"info/api/v2/aligned_volume/{_SEG}/datastacks", AlignedVolumeDatastacksHandler),
    (rf"info/api/v2/aligned_volume/{_SEG}", AlignedVolumeHandler),
]
