"""The embedding-space analysis is one code path over an array namespace: the same answers from NumPy
arrays and from device arrays (the FAKE CuPy on CPU, real CuPy with ``--run-gpu``), with no host array
leaking into the device path (the fake refuses them, as CuPy does)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from job.analysis.candidates import identity_links, nearby_codes
from job.analysis.identities import identity_table
from job.analysis.lookalikes import find_lookalikes
from job.analysis.metrics import trustworthiness
from job.analysis.suspects import judge_faces, leave_one_out, within_similarity
from job.config import KnnConfig
from job.io.demo import WILD, make_demo
from job.knn.graph import normalise
from job.knn.index import face_graph
from job.xp import fields_to_host, namespace, to_host


@pytest.fixture(scope="module")
def space():
    """A planted database (misfiled faces, look-alikes, re-enrolments), its table and its exact graph."""
    records, truth = make_demo(dataclasses.replace(WILD, n_identities=120, faces_per_identity=8, seed=4))
    ids = records["id"].astype(np.int64)
    unit = normalise(records["embedding"].astype(np.float32))
    reference = np.arange(0, len(ids), 2)  # half the faces are the fit sample, as with placement
    graph = face_graph(unit, reference, 16, KnnConfig(method="exact", exact_max_faces=10**9))
    return ids, unit, graph, truth


def _to(xp, value):
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: _to(xp, getattr(value, f.name)) for f in
                                             dataclasses.fields(value)})
    return xp.asarray(value) if isinstance(value, np.ndarray) else value


def _same(host, device, exact: bool = True) -> None:
    """Equal answers: to float rounding with NumPy underneath (the fake); on real CuPy, whose cuBLAS rounds
    otherwise, floats to 1e-4 and decisions (bool, int) on 99.5% of faces (a tie at a threshold may flip)."""
    if dataclasses.is_dataclass(host):
        for field in dataclasses.fields(host):
            _same(getattr(host, field.name), getattr(device, field.name), exact)
        return
    if isinstance(host, tuple):
        for one, other in zip(host, device, strict=True):
            _same(one, other, exact)
        return
    if isinstance(host, np.ndarray):
        found = to_host(device)
        assert isinstance(found, np.ndarray) and found.dtype == host.dtype
        if exact or host.dtype.kind == "f":
            np.testing.assert_allclose(found, host, rtol=1e-5 if exact else 1e-4, atol=1e-6 if exact else 1e-4,
                                       equal_nan=True)
        else:
            assert found.shape == host.shape and (found == host).mean() >= 0.995
    else:
        assert device == pytest.approx(host, rel=1e-6 if exact else 1e-4)


def _exact(xp) -> bool:
    return xp is np or getattr(xp, "IS_FAKE", False)


def test_namespace_follows_the_arrays(xp) -> None:
    assert namespace(np.zeros(2)) is np
    assert namespace(np.zeros(2), xp.zeros(2)) is xp


def test_the_fake_refuses_host_arrays_like_cupy(xp) -> None:
    if xp is np:
        pytest.skip("NumPy mixes with itself")
    device = xp.arange(4)
    with pytest.raises(TypeError):
        np.asarray(device)  # implicit conversion
    if getattr(xp, "IS_FAKE", False):
        with pytest.raises(TypeError):
            _ = device + np.arange(4)  # a host array in a device expression
        with pytest.raises(TypeError):
            np.where(device > 1, device, 0)  # a NumPy function on a device array
        with pytest.raises(AttributeError):
            _ = xp.errstate  # CuPy has no errstate: the fake offers only CuPy's recorded names
        with pytest.raises(TypeError):
            xp.clip(device, min=0)  # NumPy 2.1's keywords: CuPy's clip takes a_min, a_max
        with pytest.raises(AttributeError):
            xp.lexsort((device, device))  # CuPy wants one stacked key array
        with pytest.raises(TypeError):
            xp.take_along_axis(device, device)  # axis is required in CuPy


@pytest.mark.parametrize("row_block", [1 << 15, 7])  # 7: identities spanning the sums' row blocks
def test_identity_table_and_leave_one_out(xp, space, row_block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import job.space.kernels as kernels

    monkeypatch.setattr(kernels, "ROW_BLOCK", row_block)
    ids, unit, _, _ = space
    host = identity_table(unit, ids)
    device = identity_table(xp.asarray(unit), ids)
    _same(host, device)
    _same(host.without(unit, np.arange(0, 60, 7)), device.without(xp.asarray(unit), xp.arange(0, 60, 7)))
    _same(host.cohesion(unit), device.cohesion(xp.asarray(unit)))
    _same(leave_one_out(unit, host), leave_one_out(xp.asarray(unit), device))
    mu, model = within_similarity(host, unit.shape[1])
    mu_device, model_device = within_similarity(device, unit.shape[1])
    _same(mu, mu_device)
    assert model_device.pair_noise == pytest.approx(model.pair_noise) and model_device.typical == model.typical


def test_verdicts_are_the_same_on_the_device(xp, space) -> None:
    ids, unit, graph, truth = space
    table = identity_table(unit, ids)
    nearby = nearby_codes(graph, table.codes, 10)
    links = identity_links(table.codes, nearby, len(table.ids), 10)
    rows = np.arange(len(ids))
    scores, original = judge_faces(unit, table, graph, nearby, links[:, :5], rows=rows)
    assert set(np.flatnonzero(scores.suspect)) & set(truth.misfiled_rows)  # the host finds planted misfiles

    unit_d, table_d, graph_d = xp.asarray(unit), identity_table(xp.asarray(unit), ids), _to(xp, graph)
    nearby_d = nearby_codes(graph_d, table_d.codes, 10)
    links_d = identity_links(table_d.codes, nearby_d, len(table.ids), 10)
    _same(nearby, nearby_d)
    _same(links, links_d)
    scores_d, original_d = judge_faces(unit_d, table_d, graph_d, nearby_d, links_d[:, :5], rows=xp.asarray(rows))
    assert namespace(scores_d.score) is xp  # computed where the data is, not copied back half-way
    _same(scores, fields_to_host(scores_d), _exact(xp))
    _same(original, original_d, _exact(xp))


@pytest.mark.parametrize("all_pairs", [True, False])
def test_lookalikes_are_the_same_on_the_device(xp, space, all_pairs: bool, monkeypatch) -> None:
    import job.analysis.lookalikes as lookalikes

    if not all_pairs:
        monkeypatch.setattr(lookalikes, "ALL_PAIRS_MAX", 10)  # the candidate-pair branch
    ids, unit, graph, _ = space
    table = identity_table(unit, ids)
    links = identity_links(table.codes, nearby_codes(graph, table.codes, 10), len(table.ids), 10)
    host = find_lookalikes(table, links, top=50)
    device = find_lookalikes(identity_table(xp.asarray(unit), ids), xp.asarray(links), top=50)
    _same(host, fields_to_host(device), _exact(xp))


def test_trustworthiness_is_the_same_on_the_device(xp, space) -> None:
    ids, unit, _, _ = space
    coords = np.random.default_rng(0).normal(size=(len(ids), 2)).astype(np.float32) + unit[:, :2] * 50
    assert trustworthiness(xp.asarray(unit), coords, k=10, sample=400, seed=1) == \
        pytest.approx(trustworthiness(unit, coords, k=10, sample=400, seed=1), abs=1e-9 if _exact(xp) else 1e-4)


def test_the_cupy_exact_index_finds_the_cpu_neighbours(xp, space) -> None:
    if xp is np:
        pytest.skip("a GPU index")
    from job.knn.exact import ExactIndex
    from job.knn.gpu_index import CupyExactIndex

    _, unit, _, _ = space
    cpu, gpu = ExactIndex(), CupyExactIndex()
    cpu.build(unit[:400])
    gpu.build(xp.asarray(unit[:400]))
    found, similarity = cpu.query(unit, 12)
    found_d, similarity_d = gpu.query(xp.asarray(unit), 12)
    np.testing.assert_allclose(to_host(similarity_d), similarity, atol=1e-5)
    assert (to_host(found_d) == found).mean() > 0.999  # ties aside
