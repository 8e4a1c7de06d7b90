"""Where the faces are held is one interface (:class:`job.space.faces.Faces`): host and device faces give the
same answers to every pass, each pass notes itself when it runs, and run.json's record of what ran where is
read from the stages as they ran (:class:`job.where.Ledger`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from job.analysis.identities import identity_table
from job.io.demo import WILD, make_demo
from job.knn.graph import normalise
from job.space import kernels
from job.space.faces import CANDIDATES, DOTS, GRAPH, SUMS, DeviceFaces, HostFaces, as_faces
from job.stages import MapResult, place_held_out
from job.where import DEVICE, HOST, Ledger, Site
from job.xp import on_device, to_host


@pytest.fixture(scope="module")
def planted():
    records, _ = make_demo(dataclasses.replace(WILD, n_identities=60, faces_per_identity=6, seed=8))
    return records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))


def test_an_array_becomes_faces_by_its_namespace_and_faces_pass_through(xp, planted) -> None:
    _, unit = planted
    faces = as_faces(xp.asarray(unit))
    assert isinstance(faces, DeviceFaces if on_device(xp) else HostFaces)
    assert faces.where == ("device" if on_device(xp) else "host") and faces.xp is xp
    assert as_faces(faces) is faces
    assert (faces.n_faces, faces.dim) == unit.shape


def test_every_pass_gives_the_host_answer_wherever_the_faces_are_and_notes_itself(xp, planted) -> None:
    ids, unit = planted
    host, held = HostFaces(unit), as_faces(xp.asarray(unit))
    table = identity_table(host, ids)
    codes = table.codes.copy()
    codes[::5] = -1  # faces left out of the sums
    expected = kernels.sum_identities(unit, codes, len(table.ids))
    found = held.identity_sums(xp.asarray(codes), len(table.ids))
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_allclose(to_host(got), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_host(held.rowwise_dot(xp.asarray(table.centroids), xp.asarray(table.codes))),
                               host.rowwise_dot(table.centroids, table.codes), rtol=1e-6)
    candidates = np.random.default_rng(1).integers(-1, len(table.ids), size=(len(ids), 4))
    scale = np.random.default_rng(2).uniform(0.5, 2.0, len(table.ids))
    value, best = held.best_candidate(xp.asarray(table.centroids), xp.asarray(scale), xp.asarray(candidates),
                                      xp.asarray(table.codes))
    want_value, want_best = host.best_candidate(table.centroids, scale, candidates, table.codes)
    np.testing.assert_array_equal(to_host(best), want_best)
    np.testing.assert_allclose(to_host(value), want_value, rtol=1e-6)
    assert held.ran == [SUMS, DOTS, CANDIDATES] and GRAPH not in host.ran


def test_rows_are_gathered_where_the_faces_are_and_converted_once(xp, planted) -> None:
    _, unit = planted
    faces = as_faces(xp.asarray(unit))
    rows = np.array([3, 1, 7])
    gathered = faces.rows(rows, np.float32)
    assert gathered.dtype == np.float32 and (on_device(xp) or isinstance(gathered, np.ndarray))
    np.testing.assert_array_equal(to_host(gathered), unit[rows])


def test_held_out_placement_returns_a_new_map_and_leaves_the_one_it_was_given(smoke_run) -> None:
    """The held-out faces are placed by a stage of their own: the map it was given is not written to, so no
    later stage depends on the order the stages ran in."""
    from types import SimpleNamespace

    from job.maps.mapmodel import load_model
    from job.stages import FitPlan

    model = load_model(smoke_run.files["model"])
    n, held = 12, np.array([2, 5])
    coords = np.zeros((n, 2), dtype=np.float32)
    coords[held] = np.nan
    mapped = MapResult(coords, "exact", {})
    database = SimpleNamespace(unit=np.tile(model.centroid[:1], (n, 1)))  # only the faces the stage reads
    plan = FitPlan(table=None, fitted=np.arange(n), placed=np.array([], dtype=np.int64), held=held)  # type: ignore[arg-type]
    placed = place_held_out(database, plan, model, mapped)  # type: ignore[arg-type]
    assert np.isnan(mapped.coords[held]).all() and placed.coords is not mapped.coords
    assert np.isfinite(placed.coords).all()
    np.testing.assert_allclose(placed.coords[held], np.repeat(placed.coords[held][:1], 2, axis=0))


def test_the_ledger_says_where_each_stage_ran_and_a_cpu_run_has_no_gpu_record() -> None:
    from job.reduce.backends import UmapLearnBackend

    ledger = Ledger()
    with ledger.stage("knn", DEVICE):
        pass
    with ledger.stage("render", HOST):
        pass
    assert ledger.where == {"knn": DEVICE, "render": HOST} and set(ledger.timings) == {"knn", "render"}
    assert ledger.gpu_record(Site(UmapLearnBackend(), "asked for"), None, clusters_on_gpu=False) is None
