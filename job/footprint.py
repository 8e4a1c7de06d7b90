"""How much memory a run needs beyond the unit vectors, from the database's size alone — checked before any
work starts, so a database that would not fit is refused (exit 5) instead of dying half-way.

The run holds a few arrays per face for its whole length (ids, rows, the kNN graph, scores, coordinates),
two identity tables (n_identities x dim float32: the run's, and one derived table at a time), and, one stage
at a time, that stage's working set (the index and a query chunk; the candidate lists; UMAP's float32 copy of
the fitted faces; the 2-D tree; the output tables). The estimate is the sum of the first two and the largest
third. Calibrated against measured peak RSS at 300k and 1M faces (docs/scale.md, ``bench/bench_scale.py``); it errs
high, and is a guard, not an allocator.
"""

from __future__ import annotations

from job.config import Config
from job.knn.index import QUERY_CHUNK, nn_descent_bytes
from job.render.maps import render_bytes

BASE = 450 << 20  # the interpreter with numpy, numba, umap-learn, faiss, scipy and datashader loaded
SLACK = 1.15  # allocator fragmentation and the small arrays not counted here


def run_bytes(config: Config, n_faces: int, n_identities: int, dim: int, itemsize: int) -> int:
    """Bytes a run on ``n_faces`` faces of ``n_identities`` identities needs beyond its unit vectors."""
    k = max(config.umap.n_neighbors, config.analysis.neighbours + 1)
    components = config.umap.n_components
    fitted = min(n_faces, config.umap.fit_sample)
    per_face = 3 * 8 + 8 * k + 40 + 4 * components  # ids, rows, codes; graph; scores and masks; coordinates
    tables = 2 * n_identities * dim * 4
    stages = {
        # the fitted faces as float32 (scored against, and the exact index) and an index's fp16 codes; a query chunk
        "kNN graph": fitted * dim * 6 + min(n_faces, QUERY_CHUNK) * (dim * 4 + k * 48),
        "verdicts": n_faces * (2 * config.analysis.neighbours + 24) * 8 + n_identities * dim * 8 // 64,
        "UMAP": fitted * dim * 4 + fitted * k * 64 + fitted * components * 16,
        "analysis": n_faces * (components * 4 + 8) * 3 + n_faces * 6 * 16,
        "tables": n_faces * 120,
        "render": render_bytes(config.render) + n_faces * 5 * 4,  # the image grid, and one float32 frame
    }
    return int(SLACK * (BASE + n_faces * per_face + tables + max(stages.values())))


GPU_SEARCH_BLOCK = 5 * (256 << 20)  # a block of similarities and its top-k temporaries (cupy-exact; cuVS tiles)
HDBSCAN_PER_FACE = 2048  # cuML HDBSCAN on every map point: NN-descent graphs (degree 64), tree and labels


def gpu_run_bytes(config: Config, n_faces: int, n_identities: int, dim: int, itemsize: int) -> int:
    """GPU memory a run on the GPU backend needs: the unit vectors and the per-face arrays held there (the
    graph, the verdicts' working set), two identity tables, and the largest stage: the kNN search against the
    fitted faces (a query chunk, a block of similarities, NN-descent's graphs above gpu.exact_max_faces, one
    batch of them when batched), the verdicts, cuML's fit (its float32 copy, graph and fuzzy set), or HDBSCAN
    on every face. An estimate that errs high, as :func:`run_bytes`; ``gpu.memory=managed`` skips the check."""
    k = max(config.umap.n_neighbors, config.analysis.neighbours + 1)
    fitted = min(n_faces, config.umap.fit_sample)
    held = n_faces * (dim * itemsize + 8 * k + 3 * 8) + 2 * n_identities * dim * 4
    search = fitted * dim * 4 + min(n_faces, QUERY_CHUNK) * (dim * 4 + k * 16) + GPU_SEARCH_BLOCK
    if fitted > config.gpu.exact_max_faces:
        batches = max(config.gpu.knn_n_clusters, 1)
        search += nn_descent_bytes(fitted, dim, k) * (config.gpu.knn_overlap_factor if batches > 1 else 1) // batches
    stages = {
        "kNN graph": search,
        "verdicts": n_faces * (2 * config.analysis.neighbours + 24) * 8,
        "UMAP": fitted * (dim * 4 + config.umap.n_neighbors * 3 * 12 + config.umap.n_components * 8),
        "HDBSCAN": n_faces * HDBSCAN_PER_FACE + GPU_SEARCH_BLOCK,
    }
    return int(SLACK * (held + max(stages.values())))
