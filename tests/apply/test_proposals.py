"""corrections.csv as a run writes it: every verdict turned into its action, in the source's terms, surest kind
first and most certain first within a kind, agreeing with suspects.csv, lookalikes.csv and projection."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from job.config import load_config
from job.io.demo import DEMO_SHAPES, write_demo
from job.pipeline import run
from job.store.coherence import read_projection

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"
KINDS = ("remove", "move", "merge", "assign", "review")


@pytest.fixture(scope="module")
def wild_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataclasses import replace

    folder = tmp_path_factory.mktemp("wild")
    db = folder / "wild.npy"
    write_demo(db, replace(DEMO_SHAPES["wild"], n_identities=250, seed=3))
    names = folder / "names.jsonl"
    ids = np.unique(np.load(db, allow_pickle=False)["id"])
    names.write_text("".join(f'{{"id": {i}, "name": "{"=SUM(A1)" if i == ids[0] else f"person {i}"}"}}\n'
                             for i in ids), encoding="utf-8")
    out = folder / "run"
    run(load_config(SMOKE, {"input.path": str(db), "input.names": str(names), "out": str(out)}))
    return out


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_verdict_becomes_its_action(wild_run: Path) -> None:
    rows = _table(wild_run / "corrections.csv")
    assert list(rows[0]) == ["what", "face", "from", "to", "score", "reason", "names", "action"]
    kinds = [KINDS.index(r["what"]) for r in rows]
    assert kinds == sorted(kinds)  # the surest kind first
    assert {r["what"] for r in rows} == {"remove", "move", "review"}  # a merge is a person's call: a review
    assert all(r["action"] == r["what"] for r in rows if r["what"] != "review")
    reviewed = {(r["reason"], r["action"]) for r in rows if r["what"] == "review"}
    assert {("possible_same_person", "merge"), ("low_quality", "remove")} <= reviewed <= {
        ("possible_same_person", "merge"), ("low_quality", "remove"), ("no_clear_target", "move"),
        ("no_clear_target", "remove"), ("same_photo", "remove"), ("duplicate_other_identity", "remove")}
    columns = read_projection(wild_run / "projection.parquet")
    at = {int(row): k for k, row in enumerate(columns["row"].tolist())}
    suspects = {int(r["row"]): r for r in _table(wild_run / "suspects.csv")}
    moved = [r for r in rows if r["what"] == "move"]
    assert {int(r["face"]) for r in moved} == {row for row, s in suspects.items() if s["clear_target"] == "true"}
    for r in moved:
        assert int(r["to"]) == int(suspects[int(r["face"])]["suggested_id"]) and r["reason"] == \
            suspects[int(r["face"])]["reason"]
    scores = [float(r["score"]) for r in moved]
    assert scores == sorted(scores, reverse=True)
    for r in (r for r in rows if r["what"] == "remove"):
        face = at[int(r["face"])]
        assert columns["verdict"][face] == "duplicate"
        original = at[int(columns["duplicate_of"][face])]
        assert columns["id"][original] == columns["id"][face] == int(r["from"]) and float(r["score"]) >= 0.99
    same = {(int(p["id_a"]), int(p["id_b"])) for p in _table(wild_run / "lookalikes.csv")
            if p["possible_same_person"] == "true"}
    merged = {tuple(sorted((int(r["from"]), int(r["to"])))) for r in rows if r["action"] == "merge"}
    assert merged == same and same
    reviews = [r for r in rows if r["what"] == "review"]
    poor = {r["face"] for r in reviews if r["reason"] == "low_quality"}
    assert poor == {str(row) for row, verdict in zip(columns["row"], columns["verdict"], strict=True)
                    if verdict == "low_quality"}
    unclear = {int(r["face"]) for r in reviews if r["reason"] in ("no_clear_target", "same_photo")}
    assert all(r["to"] for r in reviews if r["reason"] == "no_clear_target")
    assert unclear == {row for row, s in suspects.items() if s["clear_target"] == "false"}


def test_names_are_shown_and_formulas_stay_text(wild_run: Path) -> None:
    rows = _table(wild_run / "corrections.csv")
    moved = next(r for r in rows if r["what"] == "move")
    assert moved["names"].count(" \u2192 ") == 1
    for r in rows:
        assert not r["names"].startswith(("=", "+", "-", "@"))  # a name that looks like a formula gets a '
