"""HDBSCAN of map points in numpy, step for step as scikit-learn's ``HDBSCAN`` (1.3+, defaults: excess-of-mass
selection, ``min_samples = min_cluster_size``, no single cluster, no epsilon), and cluster-vs-identity scores.

Why not scikit-learn itself: ``import sklearn.cluster`` costs 1.3 s of a 5k run whose whole budget is 3 s
(docs/benchmarks.md, "The everyday run"); the clustering itself takes 0.1 s. ``tests/analysis/test_clusters.py``
checks the labels and scores against scikit-learn's on several point sets.

Steps: core distance = distance to the ``min_samples``-th nearest point (itself first); Prim's minimum
spanning tree of the mutual reachability max(core_a, core_b, d(a, b)), vectorised over the points not yet in
the tree, with scikit-learn's tie order; single-linkage merges in order of weight; the tree condensed at
``min_cluster_size``; each cluster's stability sum((lambda - lambda_birth) x size); excess-of-mass selection;
each point labelled by its nearest selected ancestor (-1: noise).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from job.arrays import FloatArray, IdArray

COMPACT_EVERY = 512  # Prim's steps between dropping the points already in the tree from the working arrays


def hdbscan_labels(points: FloatArray, min_cluster_size: int) -> IdArray:
    """Cluster labels of ``points`` (n, dim): (n,) int64, clusters numbered 0.. in scikit-learn's order,
    -1 = noise."""
    from scipy.spatial import cKDTree

    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    k = min(min_cluster_size, n)
    found, _ = cKDTree(x).query(x, k=k)
    distances = np.asarray(found)  # an array (the stubs allow a scalar too)
    core = distances if k == 1 else distances[:, -1]
    source, target, weight = spanning_tree(x, core)
    order = np.argsort(weight)
    left, right, value, size = single_linkage(source[order], target[order], weight[order])
    parent, child, lam, count = condense(left, right, value, size, min_cluster_size)
    return _labels(parent, child, lam, count, n)


def spanning_tree(x: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prim's minimum spanning tree of the mutual reachability graph of ``x`` (n, dim) float64 with ``core``
    distances, grown from point 0: (source, target, weight) of its n - 1 edges in the order added.

    The working arrays hold the points not yet in the tree, in index order (ties go to the lowest index, as
    in scikit-learn); a point joining the tree gets an infinite core distance, so it is never picked again,
    and every ``COMPACT_EVERY`` steps such points are dropped from the arrays."""
    n = len(x)
    rest = np.arange(1, n)
    columns = [np.ascontiguousarray(x[1:, d]) for d in range(x.shape[1])]
    rest_core = core[1:].copy()
    best = np.full(n - 1, np.inf)
    origin = np.ones(n - 1, dtype=np.int64)  # scikit-learn starts every source at 1
    source, target, weight = np.empty(n - 1, np.int64), np.empty(n - 1, np.int64), np.empty(n - 1)
    gap, part = np.empty(n - 1), np.empty(n - 1)
    current = 0
    for step in range(n - 1):
        m = len(rest)
        here, spare = gap[:m], part[:m]
        np.subtract(columns[0], x[current, 0], out=here)
        np.multiply(here, here, out=here)
        for d in range(1, len(columns)):
            np.subtract(columns[d], x[current, d], out=spare)
            np.multiply(spare, spare, out=spare)
            here += spare
        np.sqrt(here, out=here)
        np.maximum(here, rest_core, out=here)
        np.maximum(here, core[current], out=here)
        better = here < best
        origin[better] = current
        np.minimum(best, here, out=best)
        pick = int(np.argmin(best))
        source[step], target[step], weight[step] = origin[pick], rest[pick], best[pick]
        current = int(rest[pick])
        rest_core[pick] = best[pick] = np.inf
        if (step + 1) % COMPACT_EVERY == 0:
            keep = np.isfinite(rest_core)
            rest, best, origin, rest_core = rest[keep], best[keep], origin[keep], rest_core[keep]
            columns = [column[keep] for column in columns]
    return source, target, weight


def single_linkage(source: np.ndarray, target: np.ndarray, weight: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge the tree's edges in order: each merge joins the clusters of its two points into a new one
    numbered n, n + 1, ...; returns (left, right, distance, size) per merge."""
    n = len(source) + 1
    sizes = np.zeros(2 * n - 1, dtype=np.int64)
    sizes[:n] = 1
    left, right = np.empty(n - 1, np.int64), np.empty(n - 1, np.int64)
    size = np.empty(n - 1, np.int64)
    up = [-1] * (2 * n - 1)  # each cluster's parent merge, -1 for a root
    for i, (a, b) in enumerate(zip(source.tolist(), target.tolist(), strict=True)):
        ra, rb = _find(up, a), _find(up, b)
        left[i], right[i] = ra, rb
        size[i] = sizes[ra] + sizes[rb]
        sizes[n + i] = size[i]
        up[ra] = up[rb] = n + i
    return left, right, np.asarray(weight, dtype=np.float64), size


def _find(up: list[int], node: int) -> int:
    root = node
    while up[root] != -1:
        root = up[root]
    while up[node] != -1 and up[node] != root:  # path compression
        up[node], node = root, up[node]
    return root


def condense(left: np.ndarray, right: np.ndarray, value: np.ndarray, size: np.ndarray, min_cluster_size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The condensed tree, rows (parent, child, lambda = 1 / distance, child size), walked breadth-first
    from the root: a split into two parts of at least ``min_cluster_size`` makes two new clusters; smaller
    parts fall out of their cluster as points."""
    n = len(left) + 1
    root = 2 * n - 2
    lefts, rights, values, sizes = left.tolist(), right.tolist(), value.tolist(), size.tolist()
    relabel = {root: n}
    next_label = n + 1
    rows: list[tuple[int, int, float, int]] = []
    ignore = bytearray(root + 1)
    for node in _breadth_first(lefts, rights, root, n):
        if node < n or ignore[node]:
            continue
        merge = node - n
        a, b, distance = lefts[merge], rights[merge], values[merge]
        lam = 1.0 / distance if distance > 0.0 else np.inf
        count_a = sizes[a - n] if a >= n else 1
        count_b = sizes[b - n] if b >= n else 1
        here = relabel[node]
        if count_a >= min_cluster_size and count_b >= min_cluster_size:
            for part, count in ((a, count_a), (b, count_b)):
                relabel[part] = next_label
                rows.append((here, next_label, lam, count))
                next_label += 1
            continue
        for part, count in ((a, count_a), (b, count_b)):
            if count >= min_cluster_size:
                relabel[part] = here  # the cluster goes on, only shrinking
                continue
            for sub in _breadth_first(lefts, rights, part, n):
                if sub < n:
                    rows.append((here, sub, lam, 1))
                ignore[sub] = 1
    table = np.array(rows, dtype=[("parent", np.int64), ("child", np.int64), ("lam", np.float64),
                                  ("size", np.int64)])
    return table["parent"], table["child"], table["lam"], table["size"]


def _breadth_first(lefts: list[int], rights: list[int], start: int, n: int) -> list[int]:
    order, queue = [], [start]
    while queue:
        order.extend(queue)
        queue = [child for node in queue if node >= n for child in (lefts[node - n], rights[node - n])]
    return order


def _labels(parent: np.ndarray, child: np.ndarray, lam: np.ndarray, count: np.ndarray, n: int) -> IdArray:
    """Excess-of-mass selection over the condensed tree, then each point's label."""
    root = int(parent.min())
    top = int(parent.max())
    birth = np.full(max(int(child.max()), root) + 1, np.nan)
    birth[child] = lam
    birth[root] = 0.0
    stability = np.bincount(parent - root, weights=(lam - birth[parent]) * count, minlength=top - root + 1)
    clusters = child[count > 1]
    cluster_parent = parent[count > 1]
    children: dict[int, list[int]] = {}
    for p, c in zip(cluster_parent.tolist(), clusters.tolist(), strict=True):
        children.setdefault(p, []).append(c)
    chosen = dict.fromkeys(range(top, root, -1), True)  # every cluster but the root, last-made first
    for node in chosen:
        below = sum(stability[c - root] for c in children.get(node, []))
        if below > stability[node - root]:
            chosen[node] = False
            stability[node - root] = below
        else:
            queue = list(children.get(node, []))
            while queue:
                chosen[queue[0]] = False
                queue.extend(children.get(queue.pop(0), []))
    selected = sorted(c for c, keep in chosen.items() if keep)
    number = {c: i for i, c in enumerate(selected)}
    # each cluster's nearest selected ancestor (itself if selected): parents are numbered before children
    owner = np.full(top + 1, -1, dtype=np.int64)
    up = dict(zip(clusters.tolist(), cluster_parent.tolist(), strict=True))
    for c in range(root + 1, top + 1):
        owner[c] = number[c] if c in number else owner[up[c]]
    points = count == 1
    labels = np.full(n, -1, dtype=np.int64)
    labels[child[points]] = owner[parent[points]]
    return labels


class Agreement(TypedDict):
    """Clusters against identities: ``n`` clusters, ``ari``, ``nmi``, and the ``noise`` share."""

    n: int
    ari: float
    nmi: float
    noise: float


def agreement(labels: IdArray, ids: IdArray) -> Agreement:
    """``n`` clusters found, and their adjusted Rand index / normalised mutual information (arithmetic mean
    of the entropies) with ``ids``, as scikit-learn's ``adjusted_rand_score`` / ``normalized_mutual_info_score``.

    Noise points (-1) count as one cluster, so calling everything noise scores 0 on both. (Counting each noise
    point as a cluster of its own would score an all-noise answer highly: singletons share much information
    with identities of a few faces each.)
    """
    solo = labels < 0
    return Agreement(n=len(np.unique(labels[~solo])), ari=adjusted_rand(ids, labels),
                     nmi=normalised_mutual_information(ids, labels), noise=float(solo.mean()) if len(labels) else 0.0)


def _contingency(truth: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (truth, found) label pairs that occur, as cell numbers truth_code x n_found + found_code, their
    counts, and the marginal counts of each truth and each found label."""
    _, t = np.unique(truth, return_inverse=True)
    _, f = np.unique(found, return_inverse=True)
    rows, cols = np.bincount(t).astype(np.int64), np.bincount(f).astype(np.int64)
    cells, counts = np.unique(t.astype(np.int64) * max(len(cols), 1) + f, return_counts=True)
    return cells, counts.astype(np.int64), rows, cols


def adjusted_rand(truth: np.ndarray, found: np.ndarray) -> float:
    """The adjusted Rand index of two labelings (1: the same partition, ~0: chance)."""
    n = len(truth)
    _, pairs, rows, cols = _contingency(truth, found)
    same_both = float((pairs * (pairs - 1)).sum()) / 2
    same_truth, same_found = float((rows * (rows - 1)).sum()) / 2, float((cols * (cols - 1)).sum()) / 2
    total = n * (n - 1) / 2
    tp, fn, fp = same_both, same_truth - same_both, same_found - same_both
    tn = total - tp - fn - fp
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def normalised_mutual_information(truth: np.ndarray, found: np.ndarray) -> float:
    """Mutual information of two labelings over the mean of their entropies (1: the same partition)."""
    cells, counts, rows, cols = _contingency(truth, found)
    if (len(rows) == len(cols) == 1) or (len(rows) == len(cols) == 0):
        return 1.0
    if len(rows) == 1 or len(cols) == 1:
        return 0.0
    n = float(len(truth))
    outer = rows[cells // len(cols)].astype(np.float64) * cols[cells % len(cols)]
    share = counts / n
    mi = share * (np.log(counts) - np.log(n)) + share * (-np.log(outer) + 2 * np.log(n))
    mi = float(np.clip(np.where(np.abs(mi) < np.finfo(np.float64).eps, 0.0, mi).sum(), 0.0, None))
    if mi == 0:
        return 0.0
    return float(mi / ((_entropy(rows) + _entropy(cols)) / 2))


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float(-np.sum((counts / total) * (np.log(counts) - np.log(total))))
