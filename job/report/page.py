"""``report.html``: one self-contained page per run: summary, interactive map, maps, suspects, look-alikes,
the proposed corrections to review, clusters.

Everything is inline (the script and style from ``job/report/assets/``, the data as JSON and base64, the maps
as data: URLs), so the page opens from disk with no network. Its Content-Security-Policy allows only its own
script and style (by SHA-256) and data: and blob: images, and forbids every connection (the reviewed
corrections are saved as a download of a blob: URL the script makes, which is no connection). User-given text
is escaped here (HTML) and set with ``textContent`` by the script; JSON is written so that no ``</script>`` can
end its block early.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from job.maps.mapmodel import MapModel
from job.report.content import PageContent, page_content
from job.report.faces import PageFaces, PhotoSettings, faces_for, thumbnails_note
from job.report.rundata import MAX_CELL_CHARS, REPORT_FILE, RunData, read_run
from job.report.summary import clusters_html, esc, summary_html
from job.store.reports import CORRECTIONS_FILE
from job.store.runrecord import RunRecord

COLOR_BY = ("id", "cluster", "suspect", "density")
_MAP_FIGURES = {"id": ("map_identities.png", "Identities, each in its own colour"),
                "density": ("map_density.png", "Density of every face"),
                "highlight": ("map_highlight.png", "The highlighted identities on the grey map"),
                "suspect": ("map_suspects.png", "Suspected misfiled faces, lines to the suggested identity"),
                "cluster": ("map_clusters.png", "HDBSCAN clusters")}


def report_html(run: RunData, highlight: list[int], color_by: str = "id", *, faces: PageFaces | None = None) -> str:
    """The page for ``run``, its map coloured by ``color_by`` (one of :data:`COLOR_BY`) at first, with the
    ``highlight`` identity ids highlighted, and the ``faces`` cropped from their photos (``--thumbnails``)."""
    seed = (run.record.config.render or {}).get("palette_seed", 0)  # checked as a RenderConfig only by render
    content = page_content(run, highlight, color_by, seed if type(seed) is int and seed >= 0 else 0, faces=faces)
    script, style = _asset("atlas.js"), _asset("atlas.css")
    policy = (f"default-src 'none'; script-src '{_digest(script)}'; style-src '{_digest(style)}'; "
              "img-src data: blob:; connect-src 'none'; font-src 'none'; media-src 'none'; object-src 'none'; "
              "frame-src 'none'; worker-src 'none'; base-uri 'none'; form-action 'none'")
    source = "?" if run.record.input.path is None else run.record.input.path
    return "\n".join([
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>faceatlas \u2013 {esc(source)}</title>",
        f"<style>{style}</style></head><body>",
        _header(run, content.meta, source),
        _map_section(run, content),
        f'<section id="summary"><h2>Summary</h2>{summary_html(run)}</section>',
        f'<section id="maps"><h2>Maps</h2>{_figures(run, color_by)}</section>',
        _tables(run, content.meta),
        _review_section(content.meta["review"], thumbs=content.meta["thumbs"] is not None),
        f'<section id="clusters"><h2>Clusters</h2>{clusters_html(run)}</section>',
        f'<script type="application/json" id="fa-meta">{safe_json(content.meta)}</script>',
        f'<script type="application/octet-stream" id="fa-blob">{content.blob.encoded()}</script>',
        f"<script>{script}</script>",
        "</body></html>",
        "",
    ])


def _header(run: RunData, meta: dict[str, Any], source: str) -> str:
    record = run.record
    return "\n".join([
        "<header>",
        f"<h1>faceatlas atlas: {esc(source)}</h1>",
        (f"<p>{run.n_faces:,} faces \u00b7 {len(run.model.identity):,} identities \u00b7 "
         f"{meta['suspects']:,} suspected misfiled \u00b7 {len(run.lookalikes):,} look-alike pairs \u00b7 "
         f"backend {esc(_known(record.backend))} \u00b7 faceatlas {esc(_known(record.version))}</p>"),
        ('<nav><a href="#atlas">Map</a><a href="#summary">Summary</a><a href="#maps">Maps</a>'
         '<a href="#suspects">Suspects</a><a href="#lookalikes">Look-alikes</a>'
         + ('<a href="#review">Review</a>' if meta["review"] is not None else "")
         + '<a href="#clusters">Clusters</a></nav>'),
        "</header>",
    ])


def _known(value: str | None) -> str:
    return "?" if value is None else value


def _map_section(run: RunData, content: PageContent) -> str:
    meta = content.meta
    note = (f"Drawn: a sample of {meta['n_points']:,} of the {run.n_faces:,} faces (every suspect and every "
            "highlighted identity's faces among them), over a density image of all faces."
            if meta["sampled"] else f"All {run.n_faces:,} faces drawn.")
    if run.model.n_components == 3:
        note += " This is a 3-D map: the page shows its x/y plane."
    underlay = base64.b64encode(content.underlay).decode("ascii")
    return "\n".join([
        '<section id="atlas"><h2>The map</h2>',
        '<div id="fa-controls">',
        '<label>Colour by <select id="fa-color">'
        + "".join(f'<option value="{c}">{c}</option>' for c in COLOR_BY) + "</select></label>",
        '<label><input type="checkbox" id="fa-suspects-toggle"> show suspects</label>',
        '<label>Find <input type="search" id="fa-search" placeholder="an id or a name" autocomplete="off"></label>',
        ('<button id="fa-zoom-in" title="zoom in">+</button><button id="fa-zoom-out" title="zoom out">\u2212</button>'
         '<button id="fa-reset">Whole map</button>'),
        '<span id="fa-legend"></span></div>',
        '<p id="fa-status" role="status"></p><ul id="fa-matches"></ul>',
        ('<div id="fa-atlas"><div id="fa-mapwrap"><canvas id="fa-map" aria-label="map of the faces"></canvas>'
         '<div id="fa-tip" hidden></div></div>'),
        ('<aside id="fa-panel" aria-live="polite"><h3>Point at the map</h3><p>Hover a face for its row, id and '
         "name. Click a face for its identity, verdict and most similar identities; click empty space for the "
         "identities nearest that point. Drag to pan, scroll to zoom.</p></aside></div>"),
        f'<p class="note">{esc(note)}</p>',
        f'<p class="note" id="fa-thumbs-note">{esc(thumbnails_note(meta["thumbs"]))}</p>' if meta["thumbs"] else "",
        f'<img id="fa-underlay" hidden alt="" src="data:image/png;base64,{underlay}">',
        "</section>",
    ])


def _tables(run: RunData, meta: dict[str, Any]) -> str:
    """The suspects and look-alikes sections; the script fills their rows from the page's data."""
    return "\n".join([
        f'<section id="suspects"><h2>Suspected misfiled faces ({meta["suspects"]:,})</h2>',
        f'<p class="note">{esc(_suspects_note(meta))}</p>' if meta["suspects_drawn"] < meta["suspects"] else "",
        '<p class="note">Click a column to sort; click a row to show the face on the map.</p>',
        ('<table id="fa-suspects" class="sortable"><thead><tr><th>row</th><th>filed id</th>'
         '<th class="name-col">filed name</th><th>suggested id</th><th class="name-col">suggested name</th>'
         f"<th>score</th>{_faces_th(meta)}</tr></thead><tbody></tbody></table>"),
        '<button class="more" hidden></button></section>',
        f'<section id="lookalikes"><h2>Look-alike identities ({len(run.lookalikes):,} pairs)</h2>',
        '<p class="note">Click a pair to highlight both identities on the map.</p>',
        ('<table id="fa-lookalikes" class="sortable"><thead><tr><th>id a</th><th class="name-col">name a</th>'
         '<th>id b</th><th class="name-col">name b</th><th>similarity</th><th>same person?</th>'
         f"{_faces_th(meta)}</tr></thead><tbody></tbody></table>"),
        '<button class="more" hidden></button></section>',
    ])


def _faces_th(meta: dict[str, Any]) -> str:
    """The tables' faces column, where the page carries face crops."""
    return '<th class="faces-col">faces</th>' if meta["thumbs"] else ""


def _review_section(review: dict[str, Any] | None, thumbs: bool = False) -> str:
    """The proposed corrections (corrections.csv) to accept or reject, or nothing for a run without the file;
    the script fills the rows and makes the download."""
    if review is None:
        return ""
    rows, total = review["rows"], review["total"]
    notes = []
    if review["problem"] is not None:
        notes.append(f"{CORRECTIONS_FILE} could not be read: {review['problem']}. The page lists none of it; "
                     "the file is in the run's folder.")
    elif total == 0:
        notes.append("This run proposes no corrections.")
    read = len(rows) + review["skipped"]
    if read < total:
        notes.append(f"The page lists the first {read:,} of the {total:,} proposed corrections (the most certain); "
                     f"{CORRECTIONS_FILE} has them all.")
    if review["skipped"]:
        notes.append(f"{review['skipped']:,} rows of {CORRECTIONS_FILE} are left out: they have another number of "
                     f"cells than its header, a cell over {MAX_CELL_CHARS:,} characters, bytes that are not UTF-8 "
                     "or broken quoting.")
    faces_th = '<th class="faces-col">faces</th>' if thumbs else ""
    parts = [f'<section id="review"><h2>Proposed corrections ({total:,})</h2>',
             *(f'<p class="note">{esc(note)}</p>' for note in notes)]
    if rows:
        parts += [
            ('<p class="note">Accept or reject each proposal. Download corrections saves a corrections.csv of the '
             "accepted rows only, each as the run's file has it (an accepted review with the action it proposes as "
             "its what), under the same header: the file for faceatlas apply. "
             "Click a row (not its buttons) to show the face on the map; a merge shows both identities. Nothing is "
             "sent anywhere.</p>"),
            ('<p class="note">Your choices are kept in this browser&#x27;s localStorage for this run only; '
             "Clear choices forgets them.</p>"),
            ('<div id="fa-review-controls"><button id="fa-review-accept-all">Accept all shown</button>'
             '<button id="fa-review-clear">Clear choices</button>'
             '<a id="fa-review-download" class="button" download="corrections.csv" aria-disabled="true">'
             'Download corrections</a><span id="fa-review-status" role="status"></span></div>'),
            '<p id="fa-review-where" class="note" role="status"></p>',
            ('<table id="fa-review" class="sortable"><thead><tr><th>what</th><th>face</th><th>from</th><th>to</th>'
             '<th>score</th><th>reason</th><th class="name-col">names</th><th>your choice</th>'
             f"{faces_th}</tr></thead><tbody></tbody></table>"),
            '<button class="more" hidden></button>',
        ]
    return "\n".join([*parts, "</section>"])



@dataclass(frozen=True)
class WrittenPage:
    """The page written, and what its face crops came to (run.json ``report.thumbnails``; None without)."""

    path: Path
    thumbnails: dict[str, int] | None = None


def write_page(folder: Path, record: RunRecord | Mapping[str, Any], files: dict[str, Path], highlight: list[int],
               *, model: MapModel | None = None, color_by: str = "id", photos: PhotoSettings | None = None
               ) -> WrittenPage:
    """Write ``folder/report.html`` for the run whose record is ``record`` and whose files (by role) are
    ``files``; ``model``: the run's map model, if at hand (else read from its file); ``photos``: crop the faces
    from their photos (``--thumbnails``; the run's projection names them)."""
    run = read_run(folder, RunRecord.of(record), {path.name: path for path in files.values()}, model)
    faces = faces_for(run, photos) if photos is not None else None
    written = write_report(folder / REPORT_FILE, run, highlight, color_by, faces=faces)
    return WrittenPage(written, None if faces is None else faces.record())


def write_report(path: Path, run: RunData, highlight: list[int], color_by: str = "id", *,
                 faces: PageFaces | None = None) -> Path:
    """Write the page to ``path`` atomically (with ``faces``' crops, :func:`job.report.faces.faces_for`)."""
    from job.store.outputs import write_text

    return write_text(path, report_html(run, highlight, color_by, faces=faces))


def _suspects_note(meta: dict[str, Any]) -> str:
    return (f"More suspects than the page draws: the {meta['suspects_drawn']:,} most certain are drawn and listed "
            "here; suspects.csv has them all.")


def safe_json(value: Any) -> str:
    """JSON that can sit inside ``<script>``: no ``<``, ``>`` or ``&`` (so no ``</script>`` or ``<!--``), line
    separators escaped, NaN as null."""
    from job.store.outputs import finite

    text = json.dumps(finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _figures(run: RunData, color_by: str) -> str:
    order = [color_by] + [key for key in _MAP_FIGURES if key != color_by]
    parts = []
    for key in order:
        name, caption = _MAP_FIGURES[key]
        path = run.folder / name
        if not path.is_file():
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{esc(name)}: {esc(caption)}</figcaption></figure>")
    return "".join(parts) or "<p>This run has no PNG maps.</p>"


def _asset(name: str) -> str:
    return resources.files("job.report").joinpath("assets", name).read_text(encoding="utf-8")


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
