"""``faceatlas report DIR`` and ``faceatlas render DIR``: the page, or the PNG maps and the page, made again from
a finished run's files, without the database and without a refit.

The folder is verified first (:func:`job.store.runs.open_run`), and rewritten as a run is: the kept files
linked (or copied) into a staging folder, the new ones written there, ``run.json`` last with their
checksums, then swapped in at once (:func:`job.store.outputs.staged_outputs`), so ``faceatlas verify`` holds
after it and a failure leaves the folder as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from job import __version__
from job.config import RenderConfig
from job.errors import InputError, InternalError, UsageError, one_line
from job.io.formats import file_sha256
from job.report.faces import faces_for, photo_settings
from job.report.page import COLOR_BY, write_report
from job.report.rundata import REPORT_FILE, RunData, run_data
from job.store.outputs import RUN_FILE, foreign_files, staged_outputs
from job.store.runrecord import ReportFacts, RunRecord
from job.store.runs import open_run

Log = Callable[[str], None]


def report_again(folder: Path, color_by: str | None = None, log: Log = lambda message: None, *,
                 thumbnails: bool | None = None, image_root: str | None = None) -> Path:
    """Write ``folder/report.html`` anew from the run's files; returns its path. ``thumbnails``: crop the
    faces from their photos into the page (None: as the run did), found under ``image_root`` (None: the
    run's ``input.image_root``)."""
    finished = open_run(folder)
    run = run_data(finished)
    colour = _colour(color_by, finished.record)
    highlight = list(finished.record.highlight)
    render = _render_config(finished.record, highlight, folder)
    if thumbnails is not None:
        render = render.model_copy(update={"thumbnails": thumbnails})
    root = _photo_root(finished.record) if image_root is None else _checked_root(image_root)
    faces = faces_for(run, photos) if (photos := photo_settings(render, root)) is not None else None
    if render.thumbnails and faces is None:
        log("warning: this run's projection names no photos (no image and box for its faces): the page has no "
            "face crops")

    def make(staging: Path) -> dict[str, Path]:
        return {"report": write_report(staging / REPORT_FILE, _in(run, staging), highlight, colour, faces=faces)}

    updates = _report_facts(colour, "report", None if faces is None else faces.record(),
                            image_root if image_root is not None else _recorded_root(finished.record))
    _rewrite(folder, finished.record, finished.files, make, replaced={REPORT_FILE}, updates=updates, log=log,
             config_render=None if thumbnails is None else {"thumbnails": thumbnails})
    return folder / REPORT_FILE


def render_again(folder: Path, highlight: list[int] | None = None, color_by: str | None = None,
                 log: Log = lambda message: None) -> dict[str, Path]:
    """Draw the five PNG maps and the page of the run in ``folder`` again, with ``highlight`` identity ids
    (None: the run's) and the page opening coloured by ``color_by`` (None: as before); returns {role: path}."""
    from job.render.maps import MAP_FILES, require_render_memory

    finished = open_run(folder)
    run = run_data(finished)
    chosen = list(finished.record.highlight) if highlight is None else _checked(highlight, run)
    colour = _colour(color_by, finished.record)
    render = _render_config(finished.record, chosen, folder)
    require_render_memory(render, None)
    if run.names is None and finished.record.config.input.names:
        log("warning: this run's names are not in its folder (it was made before faceatlas kept names.json); "
            "the maps and the page show ids only")

    root = _photo_root(finished.record)
    faces = faces_for(run, photos) if (photos := photo_settings(render, root)) is not None else None

    def make(staging: Path) -> dict[str, Path]:
        files = draw_maps(run, chosen, render, staging)
        files["report"] = write_report(staging / REPORT_FILE, _in(run, staging), chosen, colour, faces=faces)
        return files

    updates = {"highlight": chosen, **_report_facts(colour, "render", None if faces is None else faces.record(),
                                                    _recorded_root(finished.record))}
    written = _rewrite(folder, finished.record, finished.files, make, replaced={REPORT_FILE, *MAP_FILES.values()},
                       updates=updates, log=log, config_render={"highlight": chosen})
    return {role: folder / path.name for role, path in written.items()}


def draw_maps(run: RunData, highlight: list[int], render: RenderConfig, out_dir: Path) -> dict[str, Path]:
    """The run's five PNG maps from its files: the drawing code and inputs of the run itself."""
    from job.render.maps import MapIdentities, MapVerdicts, draw_all_maps

    columns, model = run.columns, run.model
    ids = np.asarray(columns["id"], dtype=np.int64)
    axes = ["x", "y"] + (["z"] if "z" in columns else [])
    coords = np.column_stack([columns[a] for a in axes]).astype(np.float32)
    codes = np.searchsorted(model.identity, ids)
    names = run.names or {}
    labels = {int(i): f"id {i} {names[i]}" if names.get(i) else f"id {i}" for i in highlight}
    verdict = columns["verdict"]
    drawn = MapVerdicts.of(np.asarray(columns["suspect"], dtype=bool), verdict == "low_quality",
                           np.asarray(columns["suggested_id"], dtype=np.int64), ids,
                           np.asarray(columns["cluster"], dtype=np.int64), identity=model.identity, anchor=model.anchor)
    title = Path("faceatlas" if run.record.input.path is None else run.record.input.path).name
    return draw_all_maps(coords, MapIdentities(ids, highlight, labels, codes), drawn, render, out_dir, title=title)


def _rewrite(folder: Path, record: RunRecord, files: dict[str, Path], make: Callable[[Path], dict[str, Path]], *,
             replaced: set[str], updates: dict[str, Any], log: Log, config_render: dict[str, Any] | None = None
             ) -> dict[str, Path]:
    """Replace ``folder`` by itself: its files but ``replaced`` linked into a staging folder, then the files
    ``make`` writes there (the names in ``replaced``: never written through a link into the old files), and a
    run.json that lists them (the record as read, every key it had kept, with ``updates``); returns ``make``'s
    {role: path}."""
    foreign = foreign_files(folder) if folder.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(f"{folder}: holds {shown}, which no faceatlas run wrote, and the run folder is replaced "
                         "as a whole; move it out of the folder and retry")
    with staged_outputs(folder, log) as staging:
        for name, path in files.items():
            if name not in replaced:
                _link_or_copy(path, staging / name)
        new = make(staging)
        unexpected = sorted(path.name for path in new.values() if path.name not in replaced)
        if unexpected:
            raise InternalError(f"rewriting {folder} wrote {unexpected}, not among the files it replaces")
        roles = {**record.files, **{role: path.name for role, path in new.items()}}
        checksums = {**record.file_sha256, **{path.name: file_sha256(path) for path in new.values()}}
        changes = {**updates, "files": roles, "file_sha256": checksums}
        if config_render is not None and "config" in record.model_fields_set:
            render = {**(record.config.render or {}), **config_render}
            changes["config"] = record.config.model_copy(update={"render": render})
        record.model_copy(update=changes).write(staging / RUN_FILE)
    return new


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (no copy of a large projection), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _in(run: RunData, staging: Path) -> RunData:
    """``run`` read from ``staging`` (where its maps are about to be, or already are, redrawn)."""
    from dataclasses import replace

    return replace(run, folder=staging)


def _colour(color_by: str | None, record: RunRecord) -> str:
    if color_by is None:
        recorded = record.report.color_by if record.report is not None else None
        return recorded if recorded in COLOR_BY else "id"
    if color_by not in COLOR_BY:
        raise UsageError(f"--color-by {color_by!r}: expected one of {', '.join(COLOR_BY)}")
    return color_by


def _checked_root(image_root: str) -> str:
    """``--image-root`` checked as ``input.image_root`` is."""
    from pydantic import ValidationError

    from job.config import InputConfig

    try:
        return InputConfig(image_root=image_root).image_root
    except ValidationError as exc:
        problem = one_line(exc.errors()[0].get("msg", exc), 200)
        raise UsageError(f"--image-root {image_root!r}: {problem}") from None


def _report_facts(colour: str, command: str, thumbnails: dict[str, int] | None = None,
                  image_root: str | None = None) -> dict[str, Any]:
    """run.json's ``report``: how the page opens, which faceatlas remade it with which command, what its face
    crops came to, and where ``report --image-root`` said the photos are."""
    return {"report": ReportFacts(color_by=colour, written_by=f"faceatlas {command} {__version__}",
                                  thumbnails=thumbnails, image_root=image_root)}


def _recorded_root(record: RunRecord) -> str | None:
    """The photos' folder an earlier ``report --image-root`` recorded, or None."""
    return record.report.image_root if record.report is not None else None


def _photo_root(record: RunRecord) -> str:
    """Where the run's photos are: as ``report --image-root`` last said, else the run's ``input.image_root``."""
    recorded = _recorded_root(record)
    return recorded if recorded is not None else record.config.input.image_root or ""


def _render_config(record: RunRecord, highlight: list[int], folder: Path) -> RenderConfig:
    """The run's render settings from its run.json, with ``highlight``; refused when the record was edited."""
    from pydantic import ValidationError

    recorded = record.config.render or {}
    try:
        return RenderConfig(**{**recorded, "highlight": highlight})
    except (ValidationError, TypeError) as exc:
        problem = one_line(exc, 200)
        raise InputError(f"{folder / RUN_FILE}: config.render is not a faceatlas render section ({problem}); the "
                         "record was edited, rerun faceatlas run") from None



def _checked(highlight: list[int], run: RunData) -> list[int]:
    chosen = list(dict.fromkeys(highlight))
    if len(chosen) > 10:
        raise UsageError(f"--highlight: {len(chosen)} ids, at most 10 can be highlighted (one colour each)")
    known = set(run.model.identity.tolist())
    missing = [i for i in chosen if i not in known]
    if missing:
        ids = run.model.identity
        raise UsageError(f"--highlight: ids {', '.join(map(str, missing[:10]))} are not in this run (its ids run "
                         f"{ids[0]}..{ids[-1]}); pick ids that exist")
    return chosen
