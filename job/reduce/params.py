"""The UMAP settings a fit actually uses: ``"auto"`` values resolved for how the map is made.

Measured (docs/scale.md, ``bench/bench_scale.py --settings``): fitting every face of the 5k demo, ``min_dist`` 0.1 and
``repulsion_strength`` 2 keep every metric at or above umap-learn's defaults; fitting one face per identity
(300k+ faces), the fitted faces are all strangers to each other and the map is a dense sheet of identities:
``min_dist`` 0 and ``repulsion_strength`` 3 lift trustworthiness from 0.90 to 0.92 and the same-identity
share of neighbours from 0.85 to 0.89. Epochs: 500 up to 10,000 fitted faces (as umap-learn), 300 above
(umap-learn's 200 leave large maps unconverged: trustworthiness 0.84 instead of 0.90 at 300k faces).
"""

from __future__ import annotations

from typing import Any

from job.config import UmapConfig

ALL_FACES = {"min_dist": 0.1, "repulsion_strength": 2.0}
SAMPLED = {"min_dist": 0.0, "repulsion_strength": 3.0}
SMALL_FIT = 10_000


def fit_params(params: UmapConfig, sampled: bool, n_fitted: int) -> UmapConfig:
    """``params`` with every ``"auto"`` replaced: ``sampled`` when only a sample of the faces is fitted."""
    chosen = SAMPLED if sampled else ALL_FACES
    update: dict[str, object] = {key: value for key, value in chosen.items() if getattr(params, key) == "auto"}
    if params.n_epochs == "auto":
        update["n_epochs"] = 500 if n_fitted <= SMALL_FIT else 300
    if params.init == "spectral" and n_fitted <= params.n_components + 1:
        update["init"] = "pca"  # the spectral start needs more points than eigenvectors (n_components + 1)
    return params.model_copy(update=update)


def umap_params(params: UmapConfig, seed: int | None) -> dict[str, Any]:
    """Keyword arguments shared by ``umap.UMAP`` and ``cuml.manifold.UMAP`` (same names in both)."""
    return {
        "n_components": params.n_components,
        "n_neighbors": params.n_neighbors,
        "min_dist": params.min_dist,
        "spread": params.spread,
        "metric": params.metric,
        "n_epochs": None if params.n_epochs == "auto" else params.n_epochs,
        "init": params.init,
        "repulsion_strength": params.repulsion_strength,
        "target_weight": params.target_weight,
        "random_state": seed,
    }
