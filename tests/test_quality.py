"""The foundation's quality bar on the full built-in demo database (1,000 identities, ~5,000 faces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.config import load_config
from job.pipeline import run


@pytest.mark.slow
def test_demo_unsupervised_map_is_trustworthy(tmp_path: Path) -> None:
    result = run(load_config(None, {"out": str(tmp_path)}))
    assert result.backend == "umap-learn"
    assert result.metrics["trustworthiness"] >= 0.90
    assert result.metrics["same_id_knn"] >= 0.90
    assert (tmp_path / "truth.json").is_file()  # planted answers travel with a demo run
