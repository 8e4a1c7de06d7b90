"""The atlas page's written parts, as escaped HTML: the summary (the run, its timings, each quality metric with
what it means and whether it is good) and the clusters summary.

Every value that came from the user or the data (file names, names, backend reasons) goes through
:func:`esc`; nothing here builds markup from unescaped text.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from job.report.content import clean_text
from job.report.rundata import RunData
from job.store.runrecord import GeometryFacts, Metrics, PairQuantiles

_TOP_CLUSTERS = 15
LEGACY_REFERENCE = 0.75  # a face's cosine to its identity's centre for ArcFace-like vectors (genuine ~0.56)


def esc(value: object) -> str:
    """``value`` as HTML text: ``<``, ``>``, ``&`` and both quotes escaped, lone surrogates replaced."""
    return html.escape(clean_text(str(value), 2000), quote=True)


@dataclass(frozen=True)
class Meaning:
    """One metric: ``label``, what it ``means`` in a line, and the bounds it is ``good`` / ``fair`` at
    (``higher``: whether a larger value is better; None bounds: a count, not judged)."""

    label: str
    means: str
    good: float | None = None
    fair: float | None = None
    higher: bool = True
    relative: bool = False

    def judge(self, value: float, reference: float | None = None) -> str:
        """good / fair / poor; a ``relative`` metric's bounds are shares of ``reference`` (the cosine a face of
        the database reaches to its own identity's centre; a run that did not record its geometry is judged
        as an ArcFace-like one, ``LEGACY_REFERENCE``)."""
        if self.good is None or self.fair is None:
            return ""
        scale = (reference or LEGACY_REFERENCE) if self.relative else 1.0
        better: Callable[[float, float], bool] = (lambda a, b: a >= b) if self.higher else (lambda a, b: a <= b)
        return ("good" if better(value, self.good * scale) else "fair" if better(value, self.fair * scale)
                else "poor")


MEANINGS: dict[str, Meaning] = {
    "trustworthiness": Meaning("Trustworthiness", "how far each face's map neighbours are also its neighbours in "
                               "512-D (1: the map invents no neighbours; a random map is near 0.5)", 0.9, 0.8),
    "same_id_knn": Meaning("Same-id share", "share of each face's 4 nearest faces on the map filed under the same "
                           "identity (identities with one face lower it)", 0.85, 0.6),
    "suspects": Meaning("Suspected misfiled faces", "faces the 512-D evidence says belong to another identity "
                        "(decided in 512-D, not on the map)"),
    "suspect_precision": Meaning("Suspect precision", "share of the suspects that are planted misfiles (demo "
                                 "truth given with --truth)", 0.9, 0.7),
    "suspect_recall": Meaning("Suspect recall", "share of the planted misfiles found as suspects", 0.9, 0.7),
    "lookalike_recall": Meaning("Look-alike recall", "share of the planted look-alike pairs in lookalikes.csv",
                                0.9, 0.7),
    "twin_recall": Meaning("Twin recall", "share of the planted near-twin pairs flagged as possibly one person",
                           0.9, 0.7),
    "low_quality_precision": Meaning("Low-quality precision", "share of faces called low quality that are "
                                     "planted low-quality faces", 0.9, 0.7),
    "low_quality_recall": Meaning("Low-quality recall", "share of the planted low-quality faces found", 0.9, 0.7),
    "held_out": Meaning("Held-out faces", "faces kept out of the fit to measure placement and inversion"),
    "transform.id_at_1": Meaning("Placement: own identity first", "share of held-out faces placed without a "
                                 "refit whose nearest identity is their own", 0.95, 0.8),
    "inverse.id_at_1": Meaning("Inversion: own identity first", "share of held-out faces whose map position, "
                               "turned back into 512-D, is nearest their own identity", 0.9, 0.7),
    "inverse.mean_cos": Meaning("Inversion: mean cosine", "mean cosine of a held-out face to the 512-D vector of "
                                "its map position (judged against the cosine a face has to its own identity's "
                                "centre in this database)", 0.8, 0.55, relative=True),
    "inverse.map_id_at_1": Meaning("Inversion on the map: own identity first", "as above, for map faces left "
                                   "out one at a time", 0.9, 0.7),
    "inverse.map_mean_cos": Meaning("Inversion on the map: mean cosine", "as above, for map faces left out one "
                                    "at a time", 0.8, 0.55, relative=True),
    "clusters.n": Meaning("Clusters", "HDBSCAN clusters of the map"),
    "clusters.ari": Meaning("Clusters vs identities (ARI)", "agreement of the map's clusters with the filed "
                            "identities (1: the same partition, 0: chance)", 0.8, 0.5),
    "clusters.nmi": Meaning("Clusters vs identities (NMI)", "shared information of clusters and identities (1: "
                            "each determines the other)", 0.9, 0.7),
    "clusters.noise": Meaning("Unclustered share", "share of faces HDBSCAN put in no cluster", 0.1, 0.3, False),
    "supervised_disagreement": Meaning("Supervised disagreements", "faces whose map neighbours (supervised fit) "
                                       "disagree with their 512-D neighbours"),
}


def summary_html(run: RunData) -> str:
    """The summary section's body: the run, how it was made, its timings, and its quality metrics."""
    record = run.record
    given, fit = record.input, record.fit
    facts = [
        ("Input", f"{_text(given.path)} (sha256 {_text(given.sha256)[:16]}…)"),
        ("Faces", f"{run.n_faces:,} faces, {len(run.model.identity):,} identities, {_text(given.dim)}-D"),
        ("Backend", f"{_text(record.backend)}: {record.backend_reason or ''}"),
        ("kNN graph", f"{_text(record.knn_method)}: {record.knn_reason or ''}"),
        ("Fit", (f"{_count(fit.fitted)} faces fitted, {_count(fit.placed)} placed on the fitted map, "
                 f"{_count(fit.held_out)} held out")),
        ("Geometry", geometry_text(record.geometry)),
        ("faceatlas", _text(record.version)),
    ]
    parts = ['<table class="facts">'] + [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts]
    parts.append("</table>")
    parts.append(_timings_html(record.timings))
    parts.append(_metrics_html(record.metrics, record.geometry.own_cosine() if record.geometry else None))
    return "\n".join(parts)


def geometry_text(geometry: GeometryFacts | None) -> str:
    """run.json's ``geometry`` in a sentence: what was measured, whether it centred and why, where quality came
    from ("not recorded" for a run made before faceatlas measured it)."""
    if geometry is None or not geometry.model_fields_set:
        return "not recorded (a run made before faceatlas measured it)"

    def medians(block: PairQuantiles) -> str:
        return f"same person {_cosine(block.genuine_median)}, different people {_cosine(block.impostor_median)}"

    text = f"median cosine of sampled pairs: {medians(geometry.raw)}"
    if geometry.centred is True:
        text += f"; after centring: {medians(geometry.working)}"
    quality = {"norms": "the raw vector lengths (they track how alike a face is to its identity)",
               "neighbours": "the faces' nearest neighbours (the lengths say nothing of quality)"}
    return (f"{text}. {geometry.reason or ''}. Face quality from "
            f"{quality.get(str(geometry.quality_from), '?')}.")


def _text(value: object) -> str:
    """A value of run.json as text, ``?`` where it was not recorded."""
    return "?" if value is None else str(value)


def _cosine(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _count(value: int | None) -> str:
    """A count from run.json as text: ``1,234``, or ``?`` where it was not recorded."""
    return "?" if value is None else f"{value:,}"


def _timings_html(timings: dict[str, float]) -> str:
    if not timings:
        return ""
    # the page's own time is left out: the run writes the page before it knows it (and report remakes it)
    numbers = {name: float(seconds) for name, seconds in timings.items() if name != "report"}
    total = sum(numbers.values())
    cells = "".join(f"<tr><td>{esc(k)}</td><td class=num>{v:.1f} s</td></tr>" for k, v in numbers.items())
    return (f'<h3>Timings ({total:.1f} s in all)</h3><table class="timings"><tr><th>stage</th><th>time</th></tr>'
            f"{cells}</table>")


def _metrics_html(metrics: Metrics, reference: float | None = None) -> str:
    rows = []
    for name, value in metrics.flat():
        if name.startswith("verdicts."):
            continue
        meaning = MEANINGS.get(name, Meaning(name, ""))
        if value is None:
            shown, verdict = "not measured", ""
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            shown, verdict = str(value), ""
        elif isinstance(value, int):
            shown, verdict = f"{value:,}", meaning.judge(float(value), reference)
        else:
            shown, verdict = f"{value:.3f}", meaning.judge(float(value), reference)
        rows.append(f'<tr><td>{esc(meaning.label)}</td><td class=num>{esc(shown)}</td>'
                    f'<td class="judge {verdict}">{esc(verdict)}</td><td>{esc(meaning.means)}</td></tr>')
    counts = ", ".join(f"{esc(k)} {v:,}" for k, v in (metrics.verdicts or {}).items())
    return ('<h3>Quality</h3><table class="metrics"><tr><th>metric</th><th>value</th><th>judged</th>'
            f'<th>what it means</th></tr>{"".join(rows)}</table>'
            + (f"<p>Verdicts per face: {counts}.</p>" if counts else ""))


def clusters_html(run: RunData) -> str:
    """The clusters section's body: how many, how they match the identities, and the largest ones."""
    cluster = np.asarray(run.columns["cluster"], dtype=np.int64)
    codes = np.searchsorted(run.model.identity, run.columns["id"])
    clustered = cluster >= 0
    n_clusters = int(np.unique(cluster[clustered]).size)
    if n_clusters == 0:
        return "<p>HDBSCAN found no clusters on this map.</p>"
    pair, counts = np.unique(cluster[clustered] * len(run.model.identity) + codes[clustered], return_counts=True)
    pair_cluster, pair_code = pair // len(run.model.identity), pair % len(run.model.identity)
    size = np.bincount(cluster[clustered])
    # each cluster's main identity (the most faces in it) and how many identities it holds
    order = np.lexsort((-counts, pair_cluster))
    first = np.r_[True, pair_cluster[order][1:] != pair_cluster[order][:-1]]
    main_cluster, main_code, main_count = pair_cluster[order][first], pair_code[order][first], counts[order][first]
    members = np.bincount(pair_cluster, minlength=len(size))
    share = main_count / size[main_cluster]
    split = int(np.sum(np.bincount(pair_code, minlength=len(run.model.identity)) > 1))
    mixed = int(np.sum(share < 0.5))
    lines = [(f"<p>{n_clusters:,} clusters; {1 - clustered.mean():.1%} of faces in none. {mixed:,} clusters have "
              f"no identity with half their faces (mixed); {split:,} identities have faces in more than one cluster "
              "(split).</p>"),
             ('<table class="clusters"><tr><th>cluster</th><th>faces</th><th>identities</th><th>main identity</th>'
              "<th>its share</th></tr>")]
    for position in np.argsort(-size[main_cluster], kind="stable")[:_TOP_CLUSTERS]:
        label = int(main_cluster[position])
        identity = int(run.model.identity[main_code[position]])
        name = (run.names or {}).get(identity)
        shown = f"{identity}" + (f" ({name})" if name else "")
        lines.append(f"<tr><td class=num>{label}</td><td class=num>{int(size[label]):,}</td>"
                     f"<td class=num>{int(members[label]):,}</td><td>{esc(shown)}</td>"
                     f"<td class=num>{share[position]:.0%}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)
