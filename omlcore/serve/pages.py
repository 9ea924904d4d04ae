"""The explorer's HTML pages, rendered on the server. Every label, path, text and name is escaped here.

Cells carry the frames of the validation's HTML grids (:data:`~omlcore.visualization.FRAME_COLOURS`): a query,
``correct`` / ``wrong`` neighbours, ``missed`` relevant items, ``retrieved`` ones where labels are unknown. Images
are thumbnails fetched by item id (``/thumbs/items/<id>``), never inlined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from urllib.parse import urlencode

from omlcore.serve.explorer import Explorer, Item, PostprocessorChoice
from omlcore.serve.ranking import RankedCell, Ranking
from omlcore.serve.run import ValidationRun, WorstQuery
from omlcore.visualization import FRAME_COLOURS

__all__ = [
    "error_page",
    "home_page",
    "items_page",
    "run_page",
    "run_query_page",
    "script",
    "search_page",
    "search_url",
    "stylesheet",
    "worst_page",
]

_LEGEND = {
    "query": "query",
    "correct": "relevant",
    "wrong": "not relevant",
    "missed": "relevant, not ranked this far",
    "retrieved": "retrieved (no labels)",
}


def stylesheet() -> str:
    """The pages' CSS: the grid frames in the colours of the HTML grids."""
    frames = "".join(
        f".cell.{kind} img{{border-color:rgb{colour}}}.key.{kind}{{border-color:rgb{colour}}}"
        for kind, colour in FRAME_COLOURS.items()
    )
    return (
        "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}"
        "header{background:#23313f;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:baseline}"
        "header a{color:#cfe3ff;text-decoration:none}header b{font-size:18px}"
        "main{padding:12px 16px}h1{font-size:20px;margin:4px 0 10px}h2{font-size:16px;margin:14px 0 6px}"
        ".grid{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}"
        ".cell{margin:0;text-align:center;font-size:11px;width:112px}"
        ".cell img{display:block;width:96px;height:96px;object-fit:contain;border:4px solid #ccc;"
        "background:#fff;image-rendering:pixelated;margin:0 auto}"
        ".cell figcaption{overflow-wrap:anywhere}.cell .moved{color:#555}"
        ".row{display:flex;gap:14px;align-items:flex-start;margin-bottom:12px;flex-wrap:wrap}"
        ".key{display:inline-block;border-left:14px solid;padding-left:6px;margin-right:14px;font-size:12px}"
        "form.inline{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:6px 0}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}"
        ".pager{margin:10px 0;display:flex;gap:12px}.error{color:#a00;font-weight:bold}.muted{color:#666}" + frames
    )


def script() -> str:
    """The pages' only script: a changed postprocessor or metric choice submits its form at once."""
    return (
        "document.querySelectorAll('select#postprocessor, select#metric').forEach(function (select) {\n"
        "  select.addEventListener('change', function () { select.form.submit(); });\n"
        "});\n"
    )


def _page(title: str, body: str, explorer: Explorer, has_run: bool) -> str:
    run_link = '<a href="/run">Validation run</a>' if has_run else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)} - omlcore explorer</title>\n"
        '<link rel="stylesheet" href="/static/explorer.css">\n<script src="/static/explorer.js" defer></script>\n'
        "</head>\n<body>\n"
        f'<header><b>omlcore explorer</b><a href="/">Search</a><a href="/items">Items</a>{run_link}'
        f'<span class="muted">{escape(_index_summary(explorer))}</span></header>\n'
        f"<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _index_summary(explorer: Explorer) -> str:
    model = (explorer.index.model or {}).get("name") or "unknown model"
    return f"{len(explorer)} items, dim {explorer.index.dim}, {explorer.index.metric}, {model}"


def _url(path: str, **params: object) -> str:
    """``path?a=1&b=2`` (None values left out), for an ``href`` (escape it when writing it)."""
    query = urlencode({key: value for key, value in params.items() if value is not None})
    return f"{path}?{query}" if query else path


def search_url(**params: object) -> str:
    """The search page's URL with ``params`` (None values left out)."""
    return _url("/search", **params)


def _link(href: str, text: str, **attributes: str) -> str:
    extra = "".join(f' {name}="{escape(value)}"' for name, value in attributes.items())
    return f'<a href="{escape(href)}"{extra}>{escape(text)}</a>'


def _item_caption(item: Item) -> str:
    parts = [f"id {item.id}"]
    if item.label is not None:
        parts.append(f"label {item.label}")
    return ", ".join(parts)


def _figure(kind: str, item: Item, caption: str, href: str | None, extra: str = "") -> str:
    title = item.path if item.path is not None else item.text if item.text is not None else f"item {item.id}"
    image = (
        f'<img src="/thumbs/items/{item.id}" alt="{escape(caption)}" title="{escape(title)}" loading="lazy" '
        'width="96" height="96">'
    )
    linked = f'<a href="{escape(href)}">{image}</a>' if href else image
    return (
        f'<figure class="cell {kind}" data-kind="{kind}" data-item="{item.id}">{linked}'
        f"<figcaption>{escape(caption)}{extra}</figcaption></figure>"
    )


def _cell(explorer: Explorer, cell: RankedCell, href: str, postprocessed: bool) -> str:
    item = explorer.item_at(cell.row)
    if cell.rank is None:
        head = "missed"
    else:
        head = f"#{cell.rank} {cell.distance:.3g}" if cell.distance is not None else f"#{cell.rank}"
    caption = f"{head} ({cell.label})" if cell.label is not None else head
    extra = ""
    if postprocessed and cell.rank is not None:
        moved = "new" if cell.before is None else f"was #{cell.before}"
        extra = f'<br><span class="moved" data-before="{cell.before if cell.before is not None else ""}">{moved}</span>'
    return _figure(cell.kind, item, caption, href, extra)


def _legend(kinds: Iterable[str]) -> str:
    present = [kind for kind in FRAME_COLOURS if kind in set(kinds)]
    return "<p>" + "".join(f'<span class="key {kind}">{escape(_LEGEND[kind])}</span>' for kind in present) + "</p>"


def _switch(choices: Sequence[PostprocessorChoice], current: str | None, hidden: Mapping[str, object]) -> str:
    """The postprocessor switch: a GET form keeping ``hidden`` parameters; unavailable ones disabled, with why."""
    options = ['<option value="none">none (the kNN)</option>']
    for choice in choices:
        selected = " selected" if choice.name == current else ""
        disabled = "" if choice.available else " disabled"
        label = choice.name if choice.available else f"{choice.name} (needs arguments)"
        tip = choice.summary if choice.available else (choice.reason or "")
        options.append(
            f'<option value="{escape(choice.name)}" title="{escape(tip)}"{selected}{disabled}>{escape(label)}</option>'
        )
    fields = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(str(value))}">'
        for name, value in hidden.items()
        if value is not None
    )
    return (
        f'<form class="inline switch" method="get">{fields}<label>postprocessor '
        f'<select name="postprocessor" id="postprocessor">{"".join(options)}</select></label>'
        '<button type="submit">apply</button></form>'
    )


def _pager(path: str, page: int, pages: int, params: Mapping[str, object]) -> str:
    links = []
    if page > 1:
        links.append(_link(_url(path, **params, page=page - 1), "previous", rel="prev", id="prev"))
    links.append(f'<span class="muted">page {page} of {pages}</span>')
    if page < pages:
        links.append(_link(_url(path, **params, page=page + 1), "next", rel="next", id="next"))
    return f'<nav class="pager">{"".join(links)}</nav>'


def home_page(explorer: Explorer, has_run: bool, max_upload_mb: float) -> str:
    """Search by an uploaded image, by text (item lookup), or pick an item."""
    choices = explorer.postprocessors()
    available = [escape(choice.name) for choice in choices if choice.available]
    options = "".join(f'<option value="{name}">{name}</option>' for name in available)
    upload = (
        '<h2>Search by an image</h2><form class="inline" id="upload" method="post" action="/search" '
        'enctype="multipart/form-data"><input type="file" name="file" accept="image/*" required>'
        '<label>postprocessor <select name="postprocessor"><option value="none">none</option>'
        f"{options}</select></label>"
        f'<button type="submit">search</button><span class="muted">at most {max_upload_mb:g} MB</span></form>'
        if explorer.can_embed
        else '<p class="muted">The index records no model config (built in Python): search by item.</p>'
    )
    what = "text, path or label" if explorer.has_texts else "path or label"
    find = (
        f"<h2>Find an item by {what}</h2>"
        '<form class="inline" method="get" action="/items"><input type="search" name="q" id="find" '
        f'placeholder="{escape(what)} contains ..."><button type="submit">find</button></form>'
    )
    items, _ = explorer.find(0, 12)
    picks = "".join(_figure("retrieved", item, _item_caption(item), _url("/search", item=item.id)) for item in items)
    body = f'{upload}{find}<h2>Or pick an item</h2><div class="grid">{picks}</div><p>{_link("/items", "all items")}</p>'
    return _page("Search", body, explorer, has_run)


def items_page(
    explorer: Explorer, has_run: bool, items: Sequence[Item], total: int, page: int, per_page: int, contains: str | None
) -> str:
    """A page of the index's items (those matching ``contains``), each a link to its search."""
    pages = max(1, math.ceil(total / per_page))
    grid = "".join(_figure("retrieved", item, _item_caption(item), _url("/search", item=item.id)) for item in items)
    found = f" matching &quot;{escape(contains)}&quot;" if contains else ""
    body = (
        '<form class="inline" method="get" action="/items"><input type="search" name="q" id="find" '
        f'value="{escape(contains or "")}"><button type="submit">find</button></form>'
        f'<p>{total} items{found}</p><div class="grid">{grid}</div>'
        + _pager("/items", page, pages, {"q": contains or None, "per_page": per_page})
    )
    return _page("Items", body, explorer, has_run)


def _query_panel(explorer: Explorer, item: Item | None, upload_name: str | None, upload_token: str | None) -> str:
    if item is not None:
        caption = _item_caption(item)
        figure = _figure("query", item, caption, None)
        where = escape(item.path if item.path is not None else item.text or "")
        return f'<div class="row" id="query">{figure}<p class="muted">{where}</p></div>'
    assert upload_token is not None
    return (
        f'<div class="row" id="query"><figure class="cell query" data-kind="query">'
        f'<img src="/thumbs/uploads/{escape(upload_token)}" alt="uploaded image" width="96" height="96">'
        f"<figcaption>{escape(upload_name or 'upload')}</figcaption></figure></div>"
    )


def search_page(
    explorer: Explorer,
    has_run: bool,
    ranking: Ranking,
    *,
    item: Item | None,
    upload_name: str | None,
    upload_token: str | None,
    page: int,
    per_page: int,
    path: str = "/search",
    title: str = "Neighbours",
    extra: str = "",
) -> str:
    """One page of a query's ranking, with the postprocessor switch and the missed relevant items."""
    params: dict[str, object] = {"item": None if item is None or path != "/search" else item.id}
    params.update({"upload": upload_token, "per_page": per_page, "postprocessor": ranking.postprocessor})
    hidden = {name: value for name, value in params.items() if name != "postprocessor"}
    postprocessed = ranking.postprocessor is not None
    cells = "".join(
        _cell(explorer, cell, _url("/search", item=explorer.item_at(cell.row).id), postprocessed)
        for cell in ranking.cells
    )
    missed = "".join(
        _cell(explorer, cell, _url("/search", item=explorer.item_at(cell.row).id), False) for cell in ranking.missed
    )
    pages = max(1, math.ceil(ranking.total / per_page))
    relevant = f", {ranking.n_relevant} relevant" if ranking.n_relevant is not None else ""
    kinds = ["query", *(cell.kind for cell in ranking.cells), *(cell.kind for cell in ranking.missed)]
    body = (
        _query_panel(explorer, item, upload_name, upload_token)
        + extra
        + _switch(explorer.postprocessors(), ranking.postprocessor, hidden)
        + _legend(kinds)
        + f'<p class="muted">ranks {ranking.start + 1} to {ranking.start + len(ranking.cells)} of {ranking.total}'
        f"{relevant}</p>"
        + f'<div class="grid" id="ranking">{cells}</div>'
        + (f'<h2>Missed</h2><div class="grid" id="missed">{missed}</div>' if missed else "")
        + _pager(path, page, pages, params)
    )
    return _page(title, body, explorer, has_run)


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def run_page(
    explorer: Explorer,
    run: ValidationRun,
    recomputed: Mapping[str, float],
    postprocessed: Mapping[str, float] | None,
    postprocessor: str | None,
) -> str:
    """The run's metric table (as reported, as recomputed from the index, after the postprocessor) with links to the
    worst queries of each per-query metric."""
    names = sorted(set(run.reported) | set(recomputed), key=lambda name: (not name.startswith("OVERALL/"), name))
    worst_names = set(run.metric_names())
    header = "<tr><th>metric</th><th>the run</th><th>from the index</th>"
    header += f"<th>after {escape(postprocessor or '')}</th>" if postprocessed is not None else ""
    header += "<th>worst queries</th></tr>"
    rows = []
    for name in names:
        after = f'<td class="num">{_number(postprocessed.get(name))}</td>' if postprocessed is not None else ""
        href = _url("/run/worst", metric=name, postprocessor=postprocessor)
        worst = _link(href, "worst") if name in worst_names else ""
        rows.append(
            f'<tr data-metric="{escape(name)}"><td>{escape(name)}</td><td class="num">{_number(run.reported.get(name))}'
            f'</td><td class="num">{_number(recomputed.get(name))}</td>{after}<td>{worst}</td></tr>'
        )
    body = (
        f'<p class="muted">{escape(str(run.folder))}: {len(run.rows)} validation items, '
        f"{int(run.is_query.sum())} queries, {len(run.gallery)} gallery items</p>"
        + _switch(explorer.postprocessors(), postprocessor, {})
        + f'<table id="metrics">{header}{"".join(rows)}</table>'
    )
    return _page(f"Validation run {run.name}", body, explorer, True)


def worst_page(
    explorer: Explorer, run: ValidationRun, metric: str, worst: Sequence[WorstQuery], postprocessor: str | None
) -> str:
    """The worst queries by ``metric``: each row the query, its top cells and its missed items."""
    rows = []
    kinds = {"query"}
    for entry in worst:
        href = _url(f"/run/queries/{entry.item.id}", postprocessor=postprocessor)
        query = _figure("query", entry.item, f"{_item_caption(entry.item)}: {_number(entry.value)}", href)
        cells = "".join(
            _cell(explorer, cell, _url("/search", item=explorer.item_at(cell.row).id), postprocessor is not None)
            for cell in (*entry.cells, *entry.missed)
        )
        kinds |= {cell.kind for cell in (*entry.cells, *entry.missed)}
        rows.append(f'<div class="row worst" data-item="{entry.item.id}">{query}{cells}</div>')
    options = "".join(
        f'<option value="{escape(name)}"{" selected" if name == metric else ""}>{escape(name)}</option>'
        for name in run.metric_names()
    )
    picker = (
        '<form class="inline" method="get"><label>metric <select name="metric" id="metric">'
        f"{options}</select></label>"
        + (f'<input type="hidden" name="postprocessor" value="{escape(postprocessor)}">' if postprocessor else "")
        + '<button type="submit">show</button></form>'
    )
    body = (
        picker
        + _switch(explorer.postprocessors(), postprocessor, {"metric": metric})
        + _legend(kinds)
        + '<p class="muted">each row: the query (its value of the metric; click for its full ranking), its top items, '
        "then relevant items it missed</p>" + f'<div id="worst">{"".join(rows)}</div>'
    )
    return _page(f"Worst queries by {metric}", body, explorer, True)


def run_query_page(
    explorer: Explorer,
    ranking: Ranking,
    item: Item,
    values: Mapping[str, float],
    page: int,
    per_page: int,
) -> str:
    """One run query's full ranking in the run's gallery, page by page, with its value of every metric."""
    table = "".join(
        f'<tr><td>{escape(name)}</td><td class="num">{_number(value)}</td></tr>' for name, value in values.items()
    )
    extra = f'<table id="query-metrics"><tr><th>metric</th><th>this query</th></tr>{table}</table>'
    return search_page(
        explorer,
        True,
        ranking,
        item=item,
        upload_name=None,
        upload_token=None,
        page=page,
        per_page=per_page,
        path=f"/run/queries/{item.id}",
        title=f"Ranking of query {item.id} in the run's gallery",
        extra=extra,
    )


def error_page(explorer: Explorer, has_run: bool, status: int, message: str) -> str:
    """An error, named."""
    return _page(f"Error {status}", f'<p class="error" id="error">{escape(message)}</p>', explorer, has_run)
