"""Quality bars on the full built-in demo databases: the map (issue 2) and the analysis goals (issue 4)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from job.config import load_config
from job.pipeline import run


@pytest.mark.slow
def test_demo_map_and_analysis_meet_their_goals(tmp_path: Path) -> None:
    result = run(load_config(None, {"out": str(tmp_path)}))
    metrics = result.metrics.model_dump()
    assert result.backend == "umap-learn"
    assert metrics["trustworthiness"] >= 0.90
    assert metrics["same_id_knn"] >= 0.90
    assert (tmp_path / "truth.json").is_file()  # planted answers travel with a demo run
    assert metrics["suspect_precision"] >= 0.95 and metrics["suspect_recall"] >= 0.95
    assert metrics["lookalike_recall"] >= 0.95
    assert metrics["inverse"]["mean_cos"] >= 0.6 and metrics["inverse"]["id_at_1"] >= 0.8
    assert metrics["transform"]["id_at_1"] >= 0.8
    assert metrics["held_out"] >= 50
    assert metrics["clusters"]["n"] > 100 and metrics["clusters"]["ari"] > 0.5


@pytest.mark.slow
def test_hard_demo_supervised_still_finds_misfiled_faces_and_flags_what_the_map_hides(tmp_path: Path) -> None:
    result = run(load_config(None, {"out": str(tmp_path), "input.demo": "hard", "umap.supervised": True}))
    metrics = result.metrics.model_dump()
    assert metrics["suspect_precision"] >= 0.95 and metrics["suspect_recall"] >= 0.95
    assert metrics["lookalike_recall"] >= 0.95
    assert metrics["transform"]["id_at_1"] >= 0.8 and metrics["inverse"]["id_at_1"] >= 0.8
    assert metrics["inverse"]["mean_cos"] >= 0.5  # looser identities: a face is less like its identity's mean
    table = pq.read_table(tmp_path / "projection.parquet").to_pandas()
    import json

    planted = {m["row"] for m in json.loads((tmp_path / "truth.json").read_text())["misfiled"]}
    flagged = set(table["row"][table["supervised_disagreement"]].tolist())
    # the supervised map pulled some misfiled faces into the identity they are filed under: flagged
    assert len(flagged) >= 10 and len(flagged & planted) / len(flagged) >= 0.6
