"""Approximate nearest neighbours with faiss: an inverted-file index over float16 vectors, searched list by list.

k-means splits the reference faces into lists of about ``LIST_SIZE``; a query is compared with every face of
its ``nprobe`` nearest lists. Queries are answered with faiss's own ``big_batch_search``, which gathers all
queries of one list and scores them with one matrix product (BLAS) instead of one query at a time: on 2
cores, 1M faces against 200k reference faces, it is 1.5x faster than ``index.search`` at 4x the work per
query (recall@16 0.84 instead of 0.62). Chosen among exact search, pynndescent, faiss HNSW, hnswlib and
usearch by recall and time (docs/scale.md; ``bench/bench_scale.py --knn``).
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from job.arrays import FloatArray

if TYPE_CHECKING:
    import faiss

LIST_SIZE = 256
NPROBE = 16  # faces: the nearest reference face is found for 99.7% of queries (1M faces, 200k reference)
NPROBE_THOROUGH = 32  # identity centroids (look-alikes): at 60k identities 99.8% of planted pairs found, 16: 97%
THOROUGH_SHARE = 12  # ... and at least 1/12 of the lists: at 200k identities (782 lists) 32 probes found 7 of 10
# planted pairs, 64 all 10 (recall@10 of all identities 0.985 -> 0.997); recall at a fixed nprobe falls as lists grow
TRAIN_PER_LIST = 40  # k-means sees this many faces per list (faiss warns below 39)
ADD_CHUNK = 1 << 16
SMALL_BATCH = 4  # below this many (query, list) visits per list, plain index.search


class FaissIvfIndex:
    """faiss ``IndexIVFScalarQuantizer`` (fp16, not residual: inner products stay exact) over unit vectors."""

    name: ClassVar[str] = "faiss-ivf"
    batched: ClassVar[bool] = False  # configured with the run's batching (configure_batches)
    graphs_reference: ClassVar[bool] = False  # builds the reference faces' own graph (reference_graph)

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        self.seed = 0 if seed is None else seed
        self.thorough = thorough
        self.nprobe = NPROBE_THOROUGH if thorough else NPROBE
        self.index: faiss.IndexIVFScalarQuantizer | None = None

    def build(self, reference: np.ndarray) -> None:
        import faiss

        n, dim = reference.shape
        nlist = max(1, n // LIST_SIZE)
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False  # big_batch_search scores stored vectors directly
        index.cp.seed = self.seed
        rng = np.random.default_rng(self.seed)
        train = np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False))
        index.train(np.ascontiguousarray(reference[train], dtype=np.float32))
        for start in range(0, n, ADD_CHUNK):
            index.add(np.ascontiguousarray(reference[start:start + ADD_CHUNK], dtype=np.float32))
        wanted = max(self.nprobe, -(-nlist // THOROUGH_SHARE)) if self.thorough else self.nprobe
        index.nprobe = min(wanted, nlist)
        self.index = index

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, FloatArray]:
        from faiss.contrib.big_batch_search import big_batch_search

        assert self.index is not None, "build() first"
        batch = np.ascontiguousarray(queries, dtype=np.float32)
        if len(batch) * self.index.nprobe <= SMALL_BATCH * self.index.nlist:
            # few queries: faiss's bucket sort needs more (query, list) visits than lists; search one by one
            similarity, found = self.index.search(batch, k)
            return found.astype(np.int64), similarity.astype(np.float32)
        with contextlib.redirect_stdout(io.StringIO()):  # it reports progress with print(), whatever its verbosity
            similarity, found = big_batch_search(self.index, batch, k, method="knn_function")
        return found.astype(np.int64), similarity.astype(np.float32)
