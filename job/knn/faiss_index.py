"""Approximate nearest neighbours with faiss: an inverted-file index over float16 vectors (``IVF, SQfp16``).

k-means splits the reference faces into ``nlist`` lists; a query is compared with every face of its
``NPROBE`` nearest lists. Chosen among pynndescent, faiss HNSW, hnswlib and usearch by recall@15 and time
(table in the README, measured with ``bench/bench_scale.py --knn``): for a reference of one face per identity
it finds the nearest reference face for 99% of queries at a tenth of the cost of exact search. Searching
identity centroids for look-alikes (``thorough``) probes ``NPROBE_THOROUGH`` lists: at 16, one planted
look-alike pair in five was missed.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from job.arrays import FloatArray

NPROBE = 16
NPROBE_THOROUGH = 64  # identity-level search (look-alike pairs): few queries, and a missed pair is a missed answer
LIST_SIZE = 64  # reference faces per list on average: nlist = n_reference / LIST_SIZE (at least 16)
TRAIN_PER_LIST = 40  # k-means sees this many faces per list (faiss warns below 39)
ADD_CHUNK = 1 << 16


class FaissIvfIndex:
    """faiss ``IndexIVFScalarQuantizer`` (fp16) with inner-product search over unit vectors."""

    name: ClassVar[str] = "faiss-ivf"

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        self.seed = 0 if seed is None else seed
        self.nprobe = NPROBE_THOROUGH if thorough else NPROBE
        self.index: object | None = None

    def build(self, reference: np.ndarray) -> None:
        import faiss

        n, dim = reference.shape
        nlist = max(16, min(65536, n // LIST_SIZE))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        rng = np.random.default_rng(self.seed)
        train = np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False))
        index.train(np.ascontiguousarray(reference[train], dtype=np.float32))
        for start in range(0, n, ADD_CHUNK):
            index.add(np.ascontiguousarray(reference[start:start + ADD_CHUNK], dtype=np.float32))
        index.nprobe = min(self.nprobe, nlist)
        self.index = index

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, FloatArray]:
        assert self.index is not None, "build() first"
        similarity, found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return found.astype(np.int64), similarity.astype(np.float32)
