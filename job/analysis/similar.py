"""Each face's most similar identities in the embedding space, read off the run's kNN graph.

A face's nearest fitted faces (the graph's row, itself left out) belong to a few identities; each of those,
ranked by the cosine of its nearest face, is one of the face's most similar identities. This costs
n_faces x k comparisons of small integers, no embedding arithmetic: the graph already holds the cosines. The
atlas page shows them when a face is clicked (``projection.parquet`` columns ``similar_id_1..3`` and
``similar_cos_1..3``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import FloatArray, IdArray
from job.knn.graph import FaceGraph

N_SIMILAR = 3
_BLOCK = 1 << 16


@dataclass(frozen=True)
class SimilarIdentities:
    """``ids`` (n_faces, N_SIMILAR) int64 identity ids, most similar first (-1: none), and ``cosine``
    (n_faces, N_SIMILAR) float32, the cosine of that identity's nearest face to the face (NaN: none)."""

    ids: IdArray
    cosine: FloatArray

    def columns(self) -> dict[str, np.ndarray]:
        """The projection.parquet columns: ``similar_id_1``.., then ``similar_cos_1``.."""
        out: dict[str, np.ndarray] = {}
        for rank in range(self.ids.shape[1]):
            out[f"similar_id_{rank + 1}"] = np.ascontiguousarray(self.ids[:, rank])
        for rank in range(self.ids.shape[1]):
            out[f"similar_cos_{rank + 1}"] = np.ascontiguousarray(self.cosine[:, rank])
        return out


def similar_identities(graph: FaceGraph, codes: IdArray, identity_ids: IdArray, n: int = N_SIMILAR
                       ) -> SimilarIdentities:
    """The ``n`` identities whose faces are nearest each face among its graph neighbours (the face itself
    left out), with the cosine of each one's nearest face.

    Parameters
    ----------
    graph : the run's kNN graph (host arrays), every face's nearest reference faces, nearest first
    codes : ndarray of shape (n_faces,), int64 — each face's identity code (index into ``identity_ids``)
    identity_ids : ndarray of shape (n_identities,), int64 — the sorted identity ids
    """
    n_faces = len(codes)
    ids = np.full((n_faces, n), -1, dtype=np.int64)
    cosine = np.full((n_faces, n), np.nan, dtype=np.float32)
    for start in range(0, n_faces, _BLOCK):
        stop = min(start + _BLOCK, n_faces)
        block_ids, block_cos = _block(graph, codes, start, stop, n)
        found = block_ids >= 0
        ids[start:stop] = np.where(found, identity_ids[np.maximum(block_ids, 0)], -1)
        cosine[start:stop] = block_cos
    return SimilarIdentities(ids, cosine)


def _block(graph: FaceGraph, codes: IdArray, start: int, stop: int, n: int) -> tuple[IdArray, FloatArray]:
    """Identity codes (stop-start, n) (-1: none) and cosines of faces ``start:stop``."""
    positions = graph.indices[start:stop]
    rows = np.where(positions >= 0, graph.reference[np.maximum(positions, 0)], -1)
    own = np.arange(start, stop)[:, None]
    usable = (rows >= 0) & (rows != own) & np.isfinite(graph.distances[start:stop])
    neighbour = np.where(usable, codes[np.maximum(rows, 0)], -1)
    # the first (nearest) entry of each identity in the row: later entries of the same identity drop out
    first = usable.copy()
    for column in range(1, neighbour.shape[1]):
        repeated = (neighbour[:, :column] == neighbour[:, column:column + 1]).any(axis=1)
        first[:, column] &= ~repeated
    rank = np.cumsum(first, axis=1) - 1
    keep = first & (rank < n)
    out_codes = np.full((stop - start, n), -1, dtype=np.int64)
    out_cos = np.full((stop - start, n), np.nan, dtype=np.float32)
    line, entry = np.nonzero(keep)
    out_codes[line, rank[line, entry]] = neighbour[line, entry]
    out_cos[line, rank[line, entry]] = 1.0 - graph.distances[start:stop][line, entry]
    return out_codes, out_cos
