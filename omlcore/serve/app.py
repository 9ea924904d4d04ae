"""The explorer's web app (FastAPI): HTML pages and the JSON API behind them, with its OpenAPI schema.

API (``/openapi.json`` is the schema, ``/docs`` shows it):

- ``GET /api/index``: what the index holds; ``GET /api/items``: items page by page (``q`` filters);
  ``GET /api/items/{id}``: one item; ``GET /api/postprocessors``: the switch's choices.
- ``GET /api/search?item=<id>`` (or ``upload=<token>``): one page of a query's ranking (``page``, ``per_page``,
  ``postprocessor``); ``POST /api/search``: the same for an uploaded image (multipart field ``file``).
- ``GET /api/metrics``: the run's metrics (reported, recomputed from the index, after a postprocessor);
  ``GET /api/worst?metric=...``: its worst queries; ``GET /api/run/queries/{id}``: one query's ranking in its gallery.

Item ids are looked up in the index; files are only ever opened from the paths the index stores.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from PIL import Image
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

import omlcore
from omlcore.serve import pages
from omlcore.serve.batching import SearchBatcher
from omlcore.serve.explorer import Explorer, ExplorerError, Item, UnknownItemError
from omlcore.serve.ranking import Gallery, RankedCell, Ranking, rank
from omlcore.serve.ranking import Query as RankingQuery
from omlcore.serve.run import RunError, ValidationRun
from omlcore.serve.thumbnails import Thumbnails
from omlcore.serve.uploads import MAX_UPLOAD_BYTES, UploadError, UploadStore, decode_upload

__all__ = ["create_app"]

_CSP = "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'"
PerPage = Annotated[int, Query(ge=1, le=200, description="results per page")]
Page = Annotated[int, Query(ge=1, description="the page, from 1")]


class ItemModel(BaseModel):
    id: int
    label: int | None = None
    path: str | None = None
    text: str | None = None


class ItemsModel(BaseModel):
    items: list[ItemModel]
    total: int
    offset: int


class IndexModel(BaseModel):
    count: int
    dim: int
    metric: str
    dtype: str
    model: dict[str, Any] | None
    labels: bool
    paths: bool
    texts: bool
    can_embed: bool
    run: str | None
    omlcore: str


class PostprocessorModel(BaseModel):
    name: str
    summary: str
    available: bool
    reason: str | None = None


class CellModel(ItemModel):
    kind: str
    rank: int | None
    distance: float | None
    rank_before: int | None = None


class RankingModel(BaseModel):
    query: ItemModel | None
    upload: str | None = None
    postprocessor: str | None
    page: int
    per_page: int
    pages: int
    total: int
    n_relevant: int | None
    results: list[CellModel]
    missed: list[CellModel]


class MetricsModel(BaseModel):
    run: str
    reported: dict[str, float | None]
    recomputed: dict[str, float | None]
    postprocessor: str | None = None
    postprocessed: dict[str, float | None] | None = None


class WorstModel(BaseModel):
    query: ItemModel
    value: float | None
    results: list[CellModel]
    missed: list[CellModel]


def _number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _item_model(item: Item) -> ItemModel:
    return ItemModel(**item.to_json())


def _cell_model(explorer: Explorer, cell: RankedCell) -> CellModel:
    item = explorer.item_at(cell.row)
    distance = None if cell.distance is None else _number(cell.distance)
    return CellModel(**item.to_json(), kind=cell.kind, rank=cell.rank, distance=distance, rank_before=cell.before)


def create_app(
    explorer: Explorer,
    run: ValidationRun | None = None,
    *,
    thumbnails: Thumbnails,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The app over ``explorer`` (and ``run``, a validation run of the index's items), thumbnails cached in
    ``thumbnails``, uploads limited to ``max_upload_bytes``."""
    app = FastAPI(
        title="omlcore explorer",
        version=omlcore.__version__,
        description="Search an omlcore index by image or item, and inspect a validation run's rankings.",
    )
    batcher = SearchBatcher()
    uploads = UploadStore()
    has_run = run is not None
    app.router.on_shutdown.append(batcher.close)

    @app.exception_handler(ExplorerError)
    async def explorer_error(request: Request, error: Exception) -> Response:
        status = error.status if isinstance(error, UploadError) else 404 if isinstance(error, UnknownItemError) else 400
        if isinstance(error, RunError) and run is None:
            status = 404
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(error)}, status_code=status)
        return HTMLResponse(pages.error_page(explorer, has_run, status, str(error)), status_code=status)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if response.headers.get("content-type", "").startswith("text/html") and request.url.path not in ("/docs",):
            response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def need_run() -> ValidationRun:
        if run is None:
            raise RunError("no validation run is loaded: start the explorer with --run <run folder>")
        return run

    async def ranking_of(
        gallery: Gallery, query: RankingQuery, page: int, per_page: int, postprocessor: str | None
    ) -> Ranking:
        step = explorer.postprocessor(postprocessor)
        total = len(gallery) - len(gallery.excluded(query))
        if total <= 0:
            raise ExplorerError("the gallery holds no item this query can retrieve")
        pages_count = math.ceil(total / per_page)
        if page > pages_count:
            raise ExplorerError(f"page {page} is beyond the last page ({pages_count}) of {total} results")
        start, stop = (page - 1) * per_page, min(page * per_page, total)
        depth = gallery.depth(query, stop)
        neighbours = await batcher.search(gallery, query.embedding, depth, gallery.position(query.row))
        return await run_in_threadpool(
            rank, gallery, query, neighbours, start=start, stop=stop, postprocessor=step, n_missed=per_page
        )

    def ranking_model(
        ranking: Ranking, item: Item | None, upload: str | None, page: int, per_page: int
    ) -> RankingModel:
        return RankingModel(
            query=None if item is None else _item_model(item),
            upload=upload,
            postprocessor=ranking.postprocessor,
            page=page,
            per_page=per_page,
            pages=max(1, math.ceil(ranking.total / per_page)),
            total=ranking.total,
            n_relevant=ranking.n_relevant,
            results=[_cell_model(explorer, cell) for cell in ranking.cells],
            missed=[_cell_model(explorer, cell) for cell in ranking.missed],
        )

    async def run_metrics(
        postprocessor: str | None,
    ) -> tuple[ValidationRun, str | None, dict[str, float], dict[str, float] | None]:
        """The run, the postprocessor's name, its metrics recomputed from the index, and after the postprocessor."""
        current = need_run()
        step = explorer.postprocessor(postprocessor)
        recomputed = (await run_in_threadpool(current.evaluate, None)).metrics
        after = None if step is None else (await run_in_threadpool(current.evaluate, step)).metrics
        return current, None if step is None else step[0], recomputed, after

    async def search_query(item: str | None, upload: str | None) -> tuple[RankingQuery, Item | None, str | None]:
        if (item is None) == (upload is None):
            raise ExplorerError("give either item=<id> (an indexed item) or upload=<token> (from POST /api/search)")
        if item is not None:
            found = explorer.item(item)
            return explorer.query_of(found), found, None
        assert upload is not None
        stored = uploads.get(upload)
        return RankingQuery(stored.embedding), None, stored.name

    async def read_upload(request: Request) -> tuple[str, Image.Image, dict[str, str]]:
        """The multipart upload of ``request`` (field ``file``), refused before reading when too large."""
        length = request.headers.get("content-length")
        if length is None:
            raise UploadError("the upload has no Content-Length: send the file as multipart/form-data", 411)
        if not length.isdigit() or int(length) > max_upload_bytes + 64 * 1024:
            raise UploadError(f"the upload has {length} bytes; uploads are limited to {max_upload_bytes} bytes", 413)
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as error:  # a malformed multipart body
            raise UploadError(f"the request is not a multipart/form-data upload ({error})", 400) from None
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise UploadError("no file in the upload: send the image in the multipart field 'file'", 400)
        name = file.filename or "upload"
        data = await file.read(max_upload_bytes + 1)
        image = await run_in_threadpool(decode_upload, data, name, max_upload_bytes)
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        return name, image, fields

    async def store_upload(request: Request) -> tuple[str, dict[str, str]]:
        name, image, fields = await read_upload(request)
        embedding = await run_in_threadpool(explorer.embed, image)
        return uploads.add(name, image, embedding).token, fields

    # --- JSON API ------------------------------------------------------------------------------------------------

    @app.get("/api/index", response_model=IndexModel, tags=["index"])
    async def api_index() -> IndexModel:
        """What the index holds and how it is searched."""
        index = explorer.index
        return IndexModel(
            count=len(explorer),
            dim=index.dim,
            metric=index.metric,
            dtype=index.dtype,
            model=index.model,
            labels=explorer.has_labels,
            paths=explorer.has_paths,
            texts=explorer.has_texts,
            can_embed=explorer.can_embed,
            run=None if run is None else run.name,
            omlcore=omlcore.__version__,
        )

    @app.get("/api/items", response_model=ItemsModel, tags=["index"])
    async def api_items(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 48,
        q: Annotated[str | None, Query(max_length=200, description="label, path or text contains")] = None,
    ) -> ItemsModel:
        """Items in index order; ``q`` keeps those whose label, path or text contains it."""
        items, total = explorer.find(offset, limit, q)
        return ItemsModel(items=[_item_model(item) for item in items], total=total, offset=offset)

    @app.get("/api/items/{item_id}", response_model=ItemModel, tags=["index"], responses={404: {}})
    async def api_item(item_id: str) -> ItemModel:
        """One item by id (404 for an id the index does not hold)."""
        return _item_model(explorer.item(item_id))

    @app.get("/api/postprocessors", response_model=list[PostprocessorModel], tags=["search"])
    async def api_postprocessors() -> list[PostprocessorModel]:
        """The registered postprocessors; the available ones build with their defaults."""
        return [PostprocessorModel(**vars(choice)) for choice in explorer.postprocessors()]

    @app.get("/api/search", response_model=RankingModel, tags=["search"], responses={400: {}, 404: {}})
    async def api_search(
        item: str | None = None,
        upload: str | None = None,
        page: Page = 1,
        per_page: PerPage = 20,
        postprocessor: str | None = None,
    ) -> RankingModel:
        """One page of the ranking of an indexed item (``item``) or of an uploaded image (``upload`` token)."""
        query, found, _ = await search_query(item, upload)
        ranking = await ranking_of(explorer.gallery, query, page, per_page, postprocessor)
        return ranking_model(ranking, found, upload, page, per_page)

    @app.post(
        "/api/search",
        response_model=RankingModel,
        tags=["search"],
        responses={400: {}, 411: {}, 413: {}, 415: {}},
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "per_page": {"type": "integer"},
                                "postprocessor": {"type": "string"},
                            },
                        }
                    }
                },
                "required": True,
            }
        },
    )
    async def api_search_upload(request: Request) -> RankingModel:
        """The first page of an uploaded image's ranking (multipart field ``file``; also ``per_page``,
        ``postprocessor``). The answer's ``upload`` token pages on with ``GET /api/search?upload=``."""
        token, fields = await store_upload(request)
        per_page = int(fields.get("per_page", "20") or 20)
        if not 1 <= per_page <= 200:
            raise ExplorerError(f"per_page must be 1 .. 200, got {per_page}")
        query = RankingQuery(uploads.get(token).embedding)
        ranking = await ranking_of(explorer.gallery, query, 1, per_page, fields.get("postprocessor"))
        return ranking_model(ranking, None, token, 1, per_page)

    @app.get("/api/metrics", response_model=MetricsModel, tags=["run"], responses={404: {}})
    async def api_metrics(postprocessor: str | None = None) -> MetricsModel:
        """The run's metrics: as it reported them, as recomputed from the index, and after ``postprocessor``."""
        current, name, recomputed, after = await run_metrics(postprocessor)
        return MetricsModel(
            run=current.name,
            reported={key: _number(value) for key, value in current.reported.items()},
            recomputed={key: _number(value) for key, value in recomputed.items()},
            postprocessor=name,
            postprocessed=None if after is None else {key: _number(value) for key, value in after.items()},
        )

    @app.get("/api/worst", response_model=list[WorstModel], tags=["run"], responses={400: {}, 404: {}})
    async def api_worst(
        metric: str = "OVERALL/cmc/1",
        n: Annotated[int, Query(ge=1, le=100)] = 8,
        top_k: Annotated[int, Query(ge=1, le=50)] = 5,
        postprocessor: str | None = None,
    ) -> list[WorstModel]:
        """The run's ``n`` worst queries by a per-query metric, each with its top ``top_k`` and missed items."""
        current = need_run()
        worst = await run_in_threadpool(current.worst, metric, explorer.postprocessor(postprocessor), n, top_k)
        return [
            WorstModel(
                query=_item_model(entry.item),
                value=_number(entry.value),
                results=[_cell_model(explorer, cell) for cell in entry.cells],
                missed=[_cell_model(explorer, cell) for cell in entry.missed],
            )
            for entry in worst
        ]

    @app.get("/api/run/queries/{item_id}", response_model=RankingModel, tags=["run"], responses={400: {}, 404: {}})
    async def api_run_query(
        item_id: str, page: Page = 1, per_page: PerPage = 20, postprocessor: str | None = None
    ) -> RankingModel:
        """One page of a run query's full ranking in the run's gallery."""
        current = need_run()
        item = explorer.item(item_id)
        ranking = await ranking_of(current.gallery, current.query(item), page, per_page, postprocessor)
        return ranking_model(ranking, item, None, page, per_page)

    # --- thumbnails and static files -----------------------------------------------------------------------------

    @app.get("/thumbs/items/{item_id}", tags=["images"], responses={200: {"content": {"image/jpeg": {}}}, 404: {}})
    async def item_thumbnail(item_id: str) -> Response:
        """The thumbnail of an indexed item's image (made once, then cached)."""
        item = explorer.item(item_id)
        if item.path is None:
            raise UnknownItemError(f"item {item.id} has no image (the index holds no paths)")
        path = item.path

        def load() -> Image.Image:
            return Image.open(path)

        try:
            data, media_type = await run_in_threadpool(thumbnails.get, item.id, load)
        except OSError as error:
            raise UnknownItemError(f"the image of item {item.id} cannot be read ({error})") from None
        return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=86400"})

    @app.get("/thumbs/uploads/{token}", tags=["images"], responses={200: {"content": {"image/jpeg": {}}}, 404: {}})
    async def upload_thumbnail(token: str) -> Response:
        """The thumbnail of an uploaded image."""
        stored = uploads.get(token)
        return Response(stored.thumbnail, media_type=stored.media_type)

    @app.get("/static/explorer.css", include_in_schema=False)
    async def css() -> Response:
        return Response(pages.stylesheet(), media_type="text/css")

    @app.get("/static/explorer.js", include_in_schema=False)
    async def script() -> Response:
        return Response(pages.script(), media_type="text/javascript")

    # --- pages ---------------------------------------------------------------------------------------------------

    def html(text: str) -> HTMLResponse:
        return HTMLResponse(text)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        return html(pages.home_page(explorer, has_run, max_upload_bytes / 2**20))

    @app.get("/items", response_class=HTMLResponse, include_in_schema=False)
    async def items_view(page: Page = 1, per_page: PerPage = 48, q: str | None = None) -> HTMLResponse:
        items, total = explorer.find((page - 1) * per_page, per_page, q)
        return html(pages.items_page(explorer, has_run, items, total, page, per_page, q))

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    async def search_view(
        item: str | None = None,
        upload: str | None = None,
        page: Page = 1,
        per_page: PerPage = 20,
        postprocessor: str | None = None,
    ) -> HTMLResponse:
        query, found, name = await search_query(item, upload)
        ranking = await ranking_of(explorer.gallery, query, page, per_page, postprocessor)
        return html(
            pages.search_page(
                explorer,
                has_run,
                ranking,
                item=found,
                upload_name=name,
                upload_token=upload,
                page=page,
                per_page=per_page,
            )
        )

    @app.post("/search", include_in_schema=False)
    async def search_upload_view(request: Request) -> Response:
        token, fields = await store_upload(request)
        postprocessor = fields.get("postprocessor")
        target = pages.search_url(upload=token, postprocessor=None if postprocessor == "none" else postprocessor)
        return RedirectResponse(target, status_code=303)

    @app.get("/run", response_class=HTMLResponse, include_in_schema=False)
    async def run_view(postprocessor: str | None = None) -> HTMLResponse:
        current, name, recomputed, after = await run_metrics(postprocessor)
        return html(pages.run_page(explorer, current, recomputed, after, name))

    @app.get("/run/worst", response_class=HTMLResponse, include_in_schema=False)
    async def worst_view(metric: str = "OVERALL/cmc/1", postprocessor: str | None = None) -> HTMLResponse:
        current = need_run()
        step = explorer.postprocessor(postprocessor)
        top_k = int(current.config["visualization.top_k"] or 5)
        worst = await run_in_threadpool(current.worst, metric, step, 8, top_k)
        return html(pages.worst_page(explorer, current, metric, worst, None if step is None else step[0]))

    @app.get("/run/queries/{item_id}", response_class=HTMLResponse, include_in_schema=False)
    async def run_query_view(
        item_id: str, page: Page = 1, per_page: PerPage = 20, postprocessor: str | None = None
    ) -> HTMLResponse:
        current = need_run()
        item = explorer.item(item_id)
        step = explorer.postprocessor(postprocessor)
        ranking = await ranking_of(current.gallery, current.query(item), page, per_page, postprocessor)
        values = await run_in_threadpool(current.query_values, item, step)
        return html(pages.run_query_page(explorer, ranking, item, values, page, per_page))

    return app
