"""The face-parallel stages on a Dask cluster (``faceatlas run --dask``).

UMAP's fit is not distributed by any mainstream engine, so a cluster run fits on the client, on the same fit
sample a single-process run draws, and the workers do what is parallel over faces, chunk by chunk: reading
the faces from the input, the identity sums, the kNN queries against the fitted faces, the per-face fits
behind the verdicts, the placement of the faces not fitted, and datashader's density aggregate of the map.

* :mod:`job.address` (outside this package, so the config can check it): what ``--dask`` accepts;
* :mod:`job.cluster.session`: reaching the cluster (or starting a LocalCluster), checking its workers, running
  tasks and turning Dask's failures into one-line :class:`~job.errors.ClusterError`;
* :mod:`job.cluster.source`: where the workers read the faces (a path, a URL, or the built-in demo);
* :mod:`job.cluster.tasks`: the functions the workers run (pure functions of their arguments);
* :mod:`job.cluster.faces`: the client's handle on the faces the workers hold, and the distributed stages.

Nothing here is imported, and neither is Dask, unless ``dask.address`` is set.
"""
