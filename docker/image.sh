#!/bin/sh
# The images' own build steps, in one place. Dockerfile.cpu RUNs both; Dockerfile.gpu RUNs `smoke` (its
# install keeps the base image's RAPIDS, see there). tests/e2e/test_containers.py (the test marked slow) runs
# this same file in a fresh virtual environment, so what it checks is what the CPU image runs.
#
#   sh docker/image.sh install   # in the copied sources, as root: faceatlas and its dependencies
#   sh docker/image.sh smoke     # as the image's user, with the image's cache variables set
#
# smoke compiles the CPU layout kernels into NUMBA_CACHE_DIR (faceatlas warm-up), runs the job once on the
# demo database (configs/smoke.toml: few epochs, small maps; it also builds matplotlib's font list in
# MPLCONFIGDIR), checks the run folder with faceatlas verify, deletes it, and makes both caches writable
# by any uid, so a container started with another --user reuses them.
set -eu

case "${1:-}" in
install)
    pip install .
    ;;
smoke)
    : "${NUMBA_CACHE_DIR:?the image sets it}" "${MPLCONFIGDIR:?the image sets it}"
    out="$(mktemp -d)"
    faceatlas warm-up
    faceatlas run --config configs/smoke.toml --out "$out/run"
    faceatlas verify "$out/run"
    rm -rf "$out"
    chmod -R a+rwX "$NUMBA_CACHE_DIR" "$MPLCONFIGDIR"
    ;;
*)
    echo "usage: sh docker/image.sh install|smoke" >&2
    exit 2
    ;;
esac
