"""The ``faceatlas`` command line: parses arguments, calls the library, prints. No work happens here."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from job import __version__
from job.errors import FaceatlasError, InternalError, OutOfMemoryError, UsageError, one_line
from job.io.files import display_text


def _click_errors() -> tuple[type[Exception], ...]:
    """click's errors as typer raises them: typer vendors click from 0.26 (its BadParameter derives from the
    vendored ClickException); older typers raise click's own."""
    found: set[type[Exception]] = {base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException"}
    try:
        import click
    except ImportError:
        return tuple(found)
    return tuple(found | {click.ClickException})


_CLICK_ERRORS = _click_errors()

app = typer.Typer(
    name="faceatlas",
    help="UMAP maps of a face-recognizer database: cuML on a CUDA GPU, umap-learn on CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}
INTERRUPTED = 130  # the shell's code for a run stopped by a signal (128 + SIGINT)


class BackendChoice(StrEnum):
    auto = "auto"
    cuml = "cuml"
    umap_learn = "umap-learn"


def _echo(text: str, err: bool = False) -> None:
    """Print one line; a file name that is not UTF-8 (Linux names are bytes) shows U+FFFD instead of failing."""
    typer.echo(display_text(text, flatten=False), err=err)


def _say(message: str) -> None:
    _echo(f"faceatlas: {message}", err=True)


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """Turn our errors into one line on stderr and the class's exit code (traceback only with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see main): staged outputs are already dropped
        _echo("faceatlas: error: interrupted; no half-written outputs were left (rerun to finish)", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except FaceatlasError as exc:
        _fail(exc)
    except BrokenPipeError:  # `faceatlas nearest ... | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        raise typer.Exit(1) from None
    except MemoryError:
        _fail(OutOfMemoryError("out of memory; use a machine with more memory or a smaller database"))
    except OSError as exc:  # files we write: an unwritable --out, a full disk
        problem = one_line(exc.strerror or exc, 300)
        _fail(UsageError(f"{exc.filename or 'output'}: {problem}; check the path, its permissions and free space"))
    except Exception as exc:  # noqa: BLE001 - anything else is our bug: say so in one line
        text = one_line(exc, 300)
        _fail(InternalError(f"internal error ({type(exc).__name__}: {text}); rerun with --debug and report it"))


def _fail(error: FaceatlasError) -> NoReturn:
    if _state["debug"]:
        traceback.print_exc()
    text = one_line(error, 1000, ellipsis="...")  # file and field names, server replies: never more than one line
    _echo(f"faceatlas: error: {text}", err=True)
    raise typer.Exit(error.exit_code) from None


def _version(value: bool) -> None:
    if value:
        _echo(f"faceatlas {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def run(
    *,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config (see configs/).")] = None,
    input: Annotated[str | None, typer.Option("--input", "-i", help="Database: .npy, .npz or .parquet, "
                                                 "an https URL of one, sqlite:///PATH or postgresql://... (an "
                                                 "Immich database, or any with input.query); default: the built-in "
                                                 "demo database.")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output folder [default: ./faceatlas-out].")]
    = None,
    backend: Annotated[BackendChoice | None, typer.Option(help="UMAP backend [default: auto].")] = None,
    supervised: Annotated[bool | None, typer.Option("--supervised/--unsupervised",
                                                       help="Use identity ids as UMAP labels "
                                                       "[default: unsupervised].")] = None,
    n_components: Annotated[int | None, typer.Option(help="Map dimensions, 2 or 3 [default: 2].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed: reproducible, single-threaded on CPU.")]
    = None,
    highlight: Annotated[str | None, typer.Option(help="Ids to colour on the grey map, e.g. 0,1,2,3,4 "
                                                     "[default: the first five identities].")] = None,
    names: Annotated[str | None, typer.Option(help="JSONL with one object per id (display names).")]
    = None,
    truth: Annotated[str | None, typer.Option(help="The NAME.truth.json faceatlas demo-db wrote with the "
                                                 "--input file: score the run against its planted answers.")]
    = None,
    drop_invalid: Annotated[bool | None, typer.Option("--drop-invalid", help="Leave out faces with NaN/inf "
                                                         "or all-zero embeddings instead of refusing the input.")]
    = None,
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of the input, verified before use.")]
    = None,
    allow_http: Annotated[bool | None, typer.Option("--allow-http", help="Accept a plain http:// --input URL.")]
    = None,
    dask: Annotated[str | None, typer.Option("--dask", help="Run the face-parallel stages on a Dask cluster: a "
                                                "scheduler address (tcp://host:8786), or local[:N] for N local "
                                                "worker processes [default: none].")] = None,
    thumbnails: Annotated[bool | None, typer.Option("--thumbnails", help="Crop each face from its photo into "
                                                    "the atlas page (the source's image and box; off by default: "
                                                    "face crops are biometric data).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: KEY=VALUE, "
                                                      "e.g. umap.n_neighbors=30 (repeatable).")] = None,
) -> None:
    """Map a face database with UMAP and draw it: projection.parquet, three PNG maps, run.json."""
    with _errors_to_exit_codes():
        from job.config import load_config, parse_assignment

        flags: dict[str, Any] = {
            "input.path": input, "out": out, "backend": backend.value if backend else None,
            "umap.supervised": supervised, "umap.n_components": n_components, "seed": seed,
            "render.highlight": _parse_ids(highlight) if highlight is not None else None, "input.names": names,
            "input.truth": truth, "input.drop_invalid": drop_invalid, "input.sha256": sha256,
            "input.allow_http": allow_http, "dask.address": dask, "render.thumbnails": thumbnails,
        }
        overrides = {key: value for key, value in flags.items() if value is not None}
        overrides.update(parse_assignment(text) for text in set_ or [])
        settings = load_config(config, overrides)

        from job.pipeline import run as run_job
        from job.progress import stderr_progress

        start = time.perf_counter()
        result = run_job(settings, log=_say, progress=stderr_progress())
        _echo(f"faceatlas: done in {time.perf_counter() - start:.1f} s with {result.backend}; "
                   + ", ".join(_metric_text(name, value) for name, value in result.metrics.flat()))
        for role, path in result.files.items():
            _echo(f"{role:>12}: {path.resolve()}")


@app.command()
def verify(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run.")],
) -> None:
    """Check that every file of a finished run is the one the run wrote (SHA-256s in run.json)."""
    with _errors_to_exit_codes():
        from job.store.runs import open_run

        finished = open_run(folder)
        record = finished.record
        version = display_text("?" if record.version is None else record.version, 80)
        digest = display_text("?" if record.input.sha256 is None else record.input.sha256, 80)
        _echo(f"ok: {len(finished.files)} files in {folder} match run.json (faceatlas {version}, input sha256 "
                   f"{digest})")


@app.command()
def transform(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run (the map).")],
    new: Annotated[str, typer.Argument(help="New faces: .npy, .npz or .parquet (ids optional), an https URL, or a "
                                      "database (sqlite:///PATH, postgresql://...).")],
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the placed faces (.parquet).")]
    = Path("transform.parquet"),
    id_field: Annotated[str | None, typer.Option(help="Id field/column [default: the run's].")] = None,
    embedding_field: Annotated[str | None, typer.Option(help="Embedding field/column [default: the run's].")]
    = None,
    drop_invalid: Annotated[bool, typer.Option("--drop-invalid", help="Skip faces with NaN/inf or all-zero "
                                               "embeddings instead of refusing the file.")] = False,
    query: Annotated[str, typer.Option("--query", help="A database NEW: the SELECT returning identity and "
                                       "embedding columns [default: an Immich database's faces].")] = "",
) -> None:
    """Place new faces on an existing map without refitting: row, id, x, y, nearest_id, similarity (and the
    source's keys: nearest_key, face_key, identity_key, where known)."""
    with _errors_to_exit_codes():
        from job.queries import NewReading, open_map, transform_file

        start = time.perf_counter()
        reading = NewReading(id_field, embedding_field, drop_invalid, query)
        result = transform_file(open_map(folder), new, out, reading=reading, log=_say)
        same = f"; nearest_id equals the face's own id for {result.same_id:.1%}" if result.same_id is not None \
            else ""
        _echo(f"placed {result.n_faces:,} faces in {time.perf_counter() - start:.1f} s{same}")
        _echo(f"wrote {result.path.resolve()}")


_POINT_HELP = "Map coordinate (as in projection.parquet)."


@app.command()
def nearest(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run (the map).")],
    *,
    x: Annotated[float, typer.Option("--x", help=_POINT_HELP)],
    y: Annotated[float, typer.Option("--y", help=_POINT_HELP)],
    z: Annotated[float | None, typer.Option("--z", help="Third coordinate, for 3-D maps only.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=10_000, help="How many identities.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """The identities nearest to a map point, ranked by cosine in the embedding space (id, similarity,
    map_distance)."""
    with _errors_to_exit_codes():
        from job.maps.placement import nearest as nearest_identities
        from job.queries import map_point, open_map

        opened = open_map(folder)
        answers = nearest_identities(opened.model, map_point(opened, x, y, z), k)
        keyed = opened.identity_keys is not None
        if as_json:
            _echo(json.dumps([{"id": a.id, "similarity": round(a.similarity, 6),
                               "map_distance": round(a.map_distance, 6),
                               **({"key": opened.key_of(a.id)} if keyed else {})} for a in answers]))
            return
        _echo(f"{'rank':>4}  {'id':>10}  {'similarity':>10}  {'map_distance':>12}" + ("  key" if keyed else ""))
        for rank, answer in enumerate(answers, 1):
            key = f"  {display_text(opened.key_of(answer.id) or '', 80)}" if keyed else ""
            _echo(f"{rank:>4}  {answer.id:>10}  {answer.similarity:>10.4f}  {answer.map_distance:>12.4f}{key}")


@app.command()
def invert(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run (the map).")],
    *,
    x: Annotated[float, typer.Option("--x", help=_POINT_HELP)],
    y: Annotated[float, typer.Option("--y", help=_POINT_HELP)],
    z: Annotated[float | None, typer.Option("--z", help="Third coordinate, for 3-D maps only.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the vector here (.npy, float32).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the vector and its fidelity as JSON.")] = False,
) -> None:
    """The unit embedding vector for a map point, in the input's own space (comparable with the database's
    vectors), with its estimated fidelity (cosine to a face there, in the run's working space)."""
    with _errors_to_exit_codes():
        from job.analysis.geometry import to_input_space
        from job.maps.placement import invert as invert_point
        from job.queries import check_vector_out, map_point, open_map, write_vector

        opened = open_map(folder)
        check_vector_out(opened, out)
        model = opened.model
        inversion = invert_point(model, map_point(opened, x, y, z))
        # the vector in the input's own space (the run's centre added back), comparable with the database's
        vector = to_input_space(inversion.vector, model.centre, model.centre_scale)
        if out is not None:
            write_vector(out, vector)
        if as_json:
            _echo(json.dumps({"fidelity": round(inversion.fidelity, 6), "distance": round(inversion.distance, 6),
                              "vector": [round(float(v), 7) for v in vector]}))
            return
        _echo(f"fidelity {inversion.fidelity:.3f} (estimated cosine to a face at this point); nearest face "
                   f"{inversion.distance:.3g} map units away; {len(inversion.vector)}-D unit vector")
        _echo(f"wrote {out.resolve()}" if out is not None else "pass --out FILE.npy or --json to get the vector")


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run.")],
    color_by: Annotated[str | None, typer.Option("--color-by", help="The page's map colouring at first: id, "
                                                    "cluster, suspect or density [default: as before].")] = None,
    thumbnails: Annotated[bool | None, typer.Option("--thumbnails/--no-thumbnails", help="Crop the faces from "
                                                    "their photos into the page, or leave them out [default: as "
                                                    "the run did].")] = None,
    image_root: Annotated[str | None, typer.Option("--image-root", help="Where the photos are now: DIR (relative "
                                                   "paths under DIR) or PREFIX=DIR [default: the run's "
                                                   "input.image_root].")] = None,
) -> None:
    """Write the run's atlas page (report.html) again from its files, without refitting."""
    with _errors_to_exit_codes():
        from job.report.rebuild import report_again

        start = time.perf_counter()
        path = report_again(folder, color_by, log=_say, thumbnails=thumbnails, image_root=image_root)
        _echo(f"wrote {path.resolve()} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")


@app.command()
def render(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run.")],
    highlight: Annotated[str | None, typer.Option(help="Ids to colour on the grey map and mark on the page, "
                                                     "e.g. 0,1,2 [default: the run's].")] = None,
    color_by: Annotated[str | None, typer.Option("--color-by", help="The page's map colouring at first: id, "
                                                    "cluster, suspect or density [default: as before].")] = None,
) -> None:
    """Redraw the run's five PNG maps and its atlas page from its files, without refitting."""
    with _errors_to_exit_codes():
        from job.report.rebuild import render_again

        start = time.perf_counter()
        files = render_again(folder, _parse_ids(highlight) if highlight is not None else None, color_by, log=_say)
        _echo(f"redrew {len(files)} files in {time.perf_counter() - start:.1f} s")
        for role, path in files.items():
            _echo(f"{role:>12}: {path.resolve()}")


@app.command()
def apply(
    folder: Annotated[Path, typer.Argument(help="The --out folder of a faceatlas run on a file database.")],
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the corrected copy (a new file, in "
                                      "the input's format).")],
    corrections: Annotated[Path | None, typer.Option("--corrections", help="The corrections to carry out "
                                                     "[default: the run's corrections.csv].")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="The file the run read, where it is now "
                                               "[default: the path in run.json].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT and OUT.applied.json if they exist.")]
    = False,
) -> None:
    """Write a corrected copy of the run's input with the accepted corrections (move, remove, merge) carried
    out, and OUT.applied.json listing every change. The input is never changed; databases are never written."""
    with _errors_to_exit_codes():
        from job.apply.applying import apply_corrections

        done = apply_corrections(folder, out, corrections=corrections, source=input, force=force)
        counts = done.counts
        _echo(f"applied {counts['move']:,} moves, {counts['remove']:,} removals and {counts['merge']:,} merges "
              f"({counts['merged_faces']:,} faces relabelled); {counts['review']:,} review rows left as they are")
        _echo(f"wrote {done.out.resolve()} ({done.n_faces:,} faces)")
        _echo(f"wrote {done.record.resolve()}")


@app.command("demo-db")
def demo_db(
    out: Annotated[Path, typer.Argument(help="Where to write the database (.npy).")],
    *,
    identities: Annotated[int, typer.Option(min=2, help="Number of identities.")] = 1000,
    faces_per_identity: Annotated[int, typer.Option(min=1, help="Typical faces per identity.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="Generator seed.")] = 0,
    hard: Annotated[bool, typer.Option("--hard", help="The harder setting: looser identities, 1-30 faces each "
                                       "(--faces-per-identity is then the mean), misfiled faces from look-alikes.")]
    = False,
    shape: Annotated[str, typer.Option(help="standard, hard (as --hard), wild: raw norms that track face "
                                       "quality, low-quality faces, near-twins, misfiles from twins, re-enrolled "
                                       "photos, 1-30 faces each; or uncentred: wild as dlib gives it (128-D, one "
                                       "mean direction in every face, lengths without quality).")] = "standard",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT and OUT.truth.json if they exist (refused "
                                        "otherwise: OUT may be someone's real database).")] = False,
    photos: Annotated[Path | None, typer.Option("--photos", help="Also draw every face as a cartoon in a JPEG "
                                                "photo in this folder (no real person), and add each face's "
                                                "image and box fields, for run --thumbnails.")] = None,
) -> None:
    """Write a synthetic database in the seed's actor.npy format, and OUT.truth.json with its planted answers
    (pass it to faceatlas run --truth to score a run against them)."""
    with _errors_to_exit_codes():
        from dataclasses import replace

        from job.io.demo import DEMO_SHAPES, check_demo_request, seed_dtype, write_demo
        from job.store.outputs import write_json

        if shape not in DEMO_SHAPES:
            raise UsageError(f"--shape {shape!r}: expected one of {', '.join(DEMO_SHAPES)}")
        if hard and shape not in ("standard", "hard"):
            raise UsageError(f"--hard and --shape {shape}: pick one (--hard is --shape hard)")
        base = DEMO_SHAPES["hard" if hard else shape]
        spec = replace(base, n_identities=identities, seed=seed)
        # hard and wild draw 1..2x the typical faces per identity: their own typical unless one is asked for
        uneven = base.uneven_fraction >= 1.0 and faces_per_identity == 5
        spec = replace(spec, faces_per_identity=base.faces_per_identity if uneven else faces_per_identity)
        truth_path = out.with_name(out.name.removesuffix(".npy") + ".truth.json")
        check_demo_request(spec, out, truth_path, force=force)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            n_faces, truth = write_demo(out, spec, force=force)
            write_json(truth_path, truth.to_json())
        except FileExistsError:
            raise UsageError(f"{out}: appeared while demo-db wrote it, and demo-db replaces no file unasked; pick "
                             "a new name, or pass --force to replace it") from None
        except OSError as exc:
            raise UsageError(f"{out}: cannot write ({exc.strerror}); pick a writable path") from None
        if photos is not None:
            from job.io.demo_photos import add_photos

            drawn = add_photos(out, truth, photos, seed=seed)
            _echo(f"drew {len(set(drawn.image.tolist())):,} photos of cartoon faces in {photos} (a misfiled face "
                  "shows the person it really is); the database has image and box fields")
        _echo(f"wrote {out} ({n_faces:,} faces, {identities:,} identities, dtype "
                   f"{seed_dtype(identities, spec.dim)}{' + image, box' if photos is not None else ''})")
        _echo(f"wrote {truth_path} ({len(truth.misfiled_rows)} misfiled faces, "
                   f"{len(truth.lookalike_pairs)} look-alike pairs, {len(truth.twin_pairs)} near-twin pairs, "
                   f"{len(truth.low_quality_rows)} low-quality faces)")
        _echo(f"score a run against them: faceatlas run --input {out} --truth {truth_path}"
              + (" --thumbnails" if photos is not None else ""))


@app.command()
def backends(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which UMAP backends can run here, and why not the others; the GPU, if any (name, memory, driver's CUDA,
    compute capability)."""
    with _errors_to_exit_codes():
        from dataclasses import asdict

        from job.reduce.backends import probe_all, probe_gpu, resolve

        gpu = probe_gpu()
        probes = probe_all()
        chosen, reason = resolve("auto")
        if as_json:
            payload = {"auto": chosen.name, "auto_reason": reason, "gpu": asdict(gpu),
                       "backends": [asdict(p) for p in probes]}
            _echo(json.dumps(payload, indent=2))
            return
        _echo(f"gpu  {gpu.describe()}")
        for probe in probes:
            mark = "yes" if probe.available else "no "
            _echo(f"{mark}  {probe.name:<11} {probe.reason}")
        _echo(f"auto -> {chosen.name}")


@app.command("warm-up")
def warm_up() -> None:
    """Compile the CPU layout kernels into numba's cache now (a machine's first run does it otherwise)."""
    with _errors_to_exit_codes():
        from job.caches import numba_cache
        from job.reduce.layout import kernel_caches, warm_kernels

        cache = numba_cache()
        if not cache.kept:
            raise UsageError(f"warm-up: {cache.wanted} cannot hold numba's compiled kernels ({cache.problem}), so "
                             "nothing compiled now would be kept; set XDG_CACHE_HOME or NUMBA_CACHE_DIR to a "
                             "writable folder")
        seconds = warm_kernels()
        astray = [folder for folder in kernel_caches()
                  if not folder.is_relative_to(cache.folder) or not any(folder.glob("*.nbi"))]
        if astray:
            raise UsageError(f"warm-up: compiled the kernels, but numba keeps them in {astray[0]}, not in "
                             f"{cache.folder}; check that NUMBA_CACHE_DIR names a writable folder and that "
                             "NUMBA_DISABLE_JIT is unset")
        _echo(f"layout kernels ready in {cache.folder} ({seconds:.1f} s); runs on this machine now compile "
              "nothing")


def _metric_text(name: str, value: object) -> str:
    """``name value``, a float to three places."""
    return f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UsageError(f"--highlight {text!r}: expected comma-separated integer ids; write e.g. "
                         "--highlight 0,1,2") from None


def main() -> None:
    """Console-script entry point."""
    from job.caches import numba_cache

    warning = numba_cache().warning()
    if warning:
        _echo(f"faceatlas: {warning}", err=True)
    signal.signal(signal.SIGTERM, _stop)  # `docker stop`, batch schedulers: unwind like Ctrl-C
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when the shell ignores it (`cmd &`)
        signal.signal(signal.SIGINT, _stop)
    try:
        code = app(prog_name="faceatlas", standalone_mode=False)
    except _CLICK_ERRORS as exc:
        sys.exit(_usage_error(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Any) -> int:
    """A command line click could not parse (unknown option, missing or malformed value), as our one line."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `faceatlas`: the help is the answer
        exc.show()
        return int(exc.exit_code)
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "faceatlas"
    text = one_line(exc.format_message()).rstrip(".")
    _echo(f"faceatlas: error: {text[:300]}; see '{command} --help'", err=True)
    return int(exc.exit_code)


def _stop(signum: int, frame: object) -> None:
    from job.stop import request

    request(signum)

