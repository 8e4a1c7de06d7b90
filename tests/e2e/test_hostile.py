"""Hostile inputs and bad settings: each gets its exit code, one line naming the problem and the fix, and
leaves no output behind. The table of cases in docs/hostile-input.md lists the same cases."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.io.demo import DemoSpec, make_demo

ROOT = Path(__file__).parents[2]
SMOKE = str(ROOT / "configs" / "smoke.toml")  # n_neighbors = 10
RECORDS, _ = make_demo(DemoSpec(n_identities=30, faces_per_identity=4, dim=32, seed=3))
IDS = RECORDS["id"].astype(np.int64)
VECTORS = RECORDS["embedding"].astype(np.float32)
N = len(IDS)

Build = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    build: Build  # writes the bad input under the folder it is given; returns extra CLI arguments
    exit_code: int
    message: str  # a fragment the one-line error must contain


def _structured(fields: list[tuple], n: int = len(IDS)) -> np.ndarray:
    array = np.zeros(n, dtype=fields)
    for name, *_ in fields:
        if name == "id":
            array["id"] = IDS[:n].astype(array.dtype["id"])
    return array


def _npy(array: np.ndarray, name: str = "db.npy") -> Build:
    def build(folder: Path) -> list[str]:
        np.save(folder / name, array, allow_pickle=True)  # the test may write pickles; faceatlas must not read them
        return ["--input", str(folder / name)]
    return build


def _bytes(content: bytes, name: str = "db.npy") -> Build:
    def build(folder: Path) -> list[str]:
        (folder / name).write_bytes(content)
        return ["--input", str(folder / name)]
    return build


def _truncated(writer: Callable[[Path], None], name: str, keep: float) -> Build:
    def build(folder: Path) -> list[str]:
        path = folder / name
        writer(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return ["--input", str(path)]
    return build


def _npz(**arrays: np.ndarray) -> Build:
    def build(folder: Path) -> list[str]:
        np.savez(folder / "db.npz", allow_pickle=True, **arrays)
        return ["--input", str(folder / "db.npz")]
    return build


def _parquet(table: pa.Table) -> Build:
    def build(folder: Path) -> list[str]:
        pq.write_table(table, folder / "db.parquet")
        return ["--input", str(folder / "db.parquet")]
    return build


def _vectors_column(vectors: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _good_npy(path: Path) -> None:
    np.save(path, RECORDS)


def _good_npz(path: Path) -> None:
    np.savez(path, ids=IDS, embeddings=VECTORS)


def _good_parquet(path: Path) -> None:
    pq.write_table(pa.table({"id": IDS, "embedding": _vectors_column(VECTORS)}), path)


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _header_claims_more() -> Build:
    dtype = RECORDS.dtype
    return _bytes(_npy_header(dtype, (10**12,)) + RECORDS[:4].tobytes())


def _npz_member_claims_more(folder: Path) -> list[str]:
    path = folder / "db.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("ids.npy", "w") as member:
            np.lib.format.write_array(member, IDS)
        with archive.open("embeddings.npy", "w") as member:
            member.write(_npy_header(np.dtype("<f4"), (10**10, 32)) + VECTORS[:2].tobytes())
    return ["--input", str(path)]


def _sparse_larger_than_memory(folder: Path) -> list[str]:
    """A real .npy of 2**31 faces x 512 float16 (2.2 TB), stored sparse: valid, but cannot fit in memory."""
    dtype = np.dtype([("id", "<i8"), ("embedding", "<f2", (512,))])
    path = folder / "huge.npy"
    header = _npy_header(dtype, (2**31,))
    with path.open("wb") as handle:
        handle.write(header)
    try:
        with path.open("r+b") as handle:
            handle.truncate(len(header) + 2**31 * dtype.itemsize)
    except OSError as exc:
        pytest.skip(f"this file system cannot hold a 2.2 TB sparse file ({exc})")
    return ["--input", str(path)]


def _encrypted_npz(folder: Path) -> list[str]:
    path = folder / "db.npz"
    np.savez(path, ids=IDS, embeddings=VECTORS)
    content = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offsets = [info.header_offset for info in archive.infolist()]
    for offset in offsets:  # general-purpose flag bit 0, "encrypted", in each local header...
        content[offset + 6] |= 1
    central = content.find(b"PK\x01\x02")
    while central >= 0:  # ...and in each central-directory entry
        content[central + 8] |= 1
        central = content.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(content))
    return ["--input", str(path)]


def _fifo(folder: Path) -> list[str]:
    os.mkfifo(folder / "db.npy")
    return ["--input", str(folder / "db.npy")]


def _with_rows(values: dict[int, float], dtype: str = "<f4") -> Build:
    vectors = VECTORS.astype(dtype)
    for row, value in values.items():
        vectors[row] = value if value == 0 else vectors[row]
        if value != 0:
            vectors[row, 5] = value
    return _npz(ids=IDS, embeddings=vectors)


def _out_is_a_file(folder: Path) -> list[str]:
    (folder / "out").write_text("not a folder")
    return _npy(RECORDS)(folder)


def _out_holds_foreign_files(folder: Path) -> list[str]:
    (folder / "out").mkdir()
    (folder / "out" / "thesis.tex").write_text("my work")
    return _npy(RECORDS)(folder)


def _out_with_another_tools_run_json(folder: Path) -> list[str]:
    (folder / "out").mkdir()
    (folder / "out" / "run.json").write_text('{"files": {"d": "notes.txt"}}')
    (folder / "out" / "notes.txt").write_text("my notes")
    return _npy(RECORDS)(folder)


def _config_file(text: str) -> Build:
    def build(folder: Path) -> list[str]:
        (folder / "bad.toml").write_text(text)
        return ["--config", str(folder / "bad.toml")]
    return build


def _names_file(text: str) -> Build:
    def build(folder: Path) -> list[str]:
        (folder / "names.jsonl").write_text(text)
        return [*_npy(RECORDS)(folder), "--names", str(folder / "names.jsonl")]
    return build


def _args(*args: str) -> Build:
    def build(folder: Path) -> list[str]:
        return [*_npy(RECORDS)(folder), *args]
    return build


def _truth_file(text: str) -> Build:
    """``text`` as ``db.truth.json`` beside ``db.npy``, given with ``--truth`` (the last two arguments)."""
    def build(folder: Path) -> list[str]:
        np.save(folder / "db.npy", RECORDS)
        (folder / "db.truth.json").write_text(text, encoding="utf-8")
        return ["--input", str(folder / "db.npy"), "--truth", str(folder / "db.truth.json")]
    return build


NOT_OURS = '{"misfiled": 1}'
ROWS_BEYOND = ('{"generator": "faceatlas.demo", "spec": {}, "misfiled": [{"row": 999999, "true_id": 1}], '
               '"lookalike_pairs": []}')


def _ragged_parquet() -> Build:
    values = [VECTORS[i, : 32 - (i % 2)].tolist() for i in range(len(IDS))]
    return _parquet(pa.table({"id": IDS, "embedding": pa.array(values, type=pa.list_(pa.float32()))}))


def _npz_twice(folder: Path) -> list[str]:
    path = folder / "db.npz"
    with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name this case is about
        for name, array in (("ids.npy", IDS), ("ids.npy", IDS[::-1].copy()), ("embeddings.npy", VECTORS)):
            with archive.open(name, "w") as member:
                np.lib.format.write_array(member, array)
    return ["--input", str(path)]


def _two_id_columns() -> Build:
    table = pa.table([pa.array(IDS), pa.array(IDS[::-1].copy()), _vectors_column(VECTORS)],
                     names=["id", "id", "embedding"])
    return _parquet(table)


def _config_bytes(content: bytes) -> Build:
    def build(folder: Path) -> list[str]:
        (folder / "bad.toml").write_bytes(content)
        return [*_npy(RECORDS)(folder), "--config", str(folder / "bad.toml")]
    return build


def _names_bytes(content: bytes) -> Build:
    def build(folder: Path) -> list[str]:
        (folder / "names.jsonl").write_bytes(content)
        return [*_npy(RECORDS)(folder), "--names", str(folder / "names.jsonl")]
    return build


def _out_link_loop(folder: Path) -> list[str]:
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")
    return [*_npy(RECORDS)(folder), "--out", str(folder / "loop_a")]


def _out_named(name: str) -> Build:
    def build(folder: Path) -> list[str]:
        return [*_npy(RECORDS)(folder), "--out", str(folder / name)]
    return build


def _look_alike_leftovers(folder: Path) -> list[str]:
    """Files whose names only look like faceatlas's temporary names: someone's, so refused, never deleted."""
    (folder / "out").mkdir()
    (folder / "out" / ".draft.2024.tmp").write_text("my draft")
    (folder / "out" / ".staging-1-deadbeef").mkdir()
    (folder / "out" / ".staging-1-deadbeef" / "my.txt").write_text("keep")
    return _npy(RECORDS)(folder)


DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5000
NAMES_BY_POSITION = "".join(f'{{"name": "n{i}"}}\n' for i in range(29))  # 29 lines for 30 identities
GOOD_TABLE = pa.table({"id": IDS, "embedding": _vectors_column(VECTORS)})
CASES: dict[str, Case] = {
    # the file itself
    "missing file": Case(lambda f: ["--input", str(f / "nope.npy")], 3, "nope.npy: cannot open"),
    "a directory": Case(lambda f: ["--input", str(f)], 3, "is a directory"),
    "empty file": Case(_bytes(b""), 3, "an empty file"),
    "CSV text": Case(_bytes(b"id,embedding\n1,0.5\n"), 3, "not a .npy, .npz or Parquet file"),
    "a pickle": Case(_bytes(pickle.dumps({"id": IDS, "embedding": VECTORS})), 3, "unknown magic bytes"),
    "object .npy": Case(_npy(np.array([{"id": 1}, None], dtype=object)), 3, "Python objects"),
    "object field": Case(_npy(_structured([("id", "<i8"), ("embedding", "O")])), 3, "never unpickles"),
    "object array in .npz": Case(_npz(ids=IDS, embeddings=np.array([VECTORS[0], None], dtype=object)), 3,
                                 "Python objects"),
    "truncated .npy": Case(_truncated(_good_npy, "db.npy", 0.6), 3, "truncated"),
    "header claims 10**12 faces": Case(_header_claims_more(), 3, "claims shape (1000000000000,)"),
    "negative shape in header": Case(_bytes(_npy_header(RECORDS.dtype, (-5,))), 3, "which no array can have"),
    "header claims 10**20 x 0": Case(_bytes(_npy_header(RECORDS.dtype, (10**20, 0))), 3, "which no array can have"),
    "encrypted .npz": Case(_encrypted_npz, 3, "cannot read as .npz"),
    "a named pipe": Case(_fifo, 3, "not a regular file"),
    "zero-byte records": Case(_bytes(_npy_header(np.dtype([("id", "<i8", (0,)), ("embedding", "<f4", (0,))]),
                                                 (2**60,))), 3, "holds no bytes per record"),
    ".npz member claims more": Case(_npz_member_claims_more, 3, "[embeddings.npy]: the header claims"),
    "truncated .npz": Case(_truncated(_good_npz, "db.npz", 0.5), 3, "cannot read as .npz"),
    "truncated Parquet": Case(_truncated(_good_parquet, "db.parquet", 0.5), 3, "cannot read as Parquet"),
    "garbage after .npy magic": Case(_bytes(b"\x93NUMPY\x01\x00" + bytes(range(200))), 3, "header is unreadable"),
    "garbage after zip magic": Case(_bytes(b"PK\x03\x04" + bytes(200), "db.npz"), 3, "cannot read as .npz"),
    "garbage after Parquet magic": Case(_bytes(b"PAR1" + bytes(200), "db.parquet"), 3, "cannot read as Parquet"),
    # fields and dtypes
    "plain float array": Case(_npy(VECTORS), 3, "fields found: none (a plain float32 array"),
    "no embedding field": Case(_npy(_structured([("id", "<i8"), ("vec", "<f4", (32,))])), 3,
                               "no field 'embedding' (fields found: id, vec)"),
    ".npz without ids/embeddings": Case(_npz(a=IDS, b=VECTORS), 3, "found: a, b"),
    "newline in a column name": Case(_parquet(pa.table({"id\nx": IDS})), 3, "(columns found: id x)"),
    "Parquet over max_memory": Case(lambda f: [*_parquet(GOOD_TABLE)(f), "--set", "max_memory=4KiB"], 5,
                                    "the configured max_memory is"),
    "Parquet without embedding column": Case(_parquet(pa.table({"id": IDS})), 3, "no column 'embedding'"),
    "integer embeddings": Case(_npy(_structured([("id", "<i8"), ("embedding", "<i2", (32,))])), 3,
                               "embeddings have dtype int16"),
    "string embeddings": Case(_npy(_structured([("id", "<i8"), ("embedding", "<U4", (32,))])), 3,
                              "embeddings have dtype <U4"),
    "float ids": Case(_npz(ids=IDS.astype(np.float64), embeddings=VECTORS), 3, "ids have dtype float64"),
    "1-D embeddings": Case(_npy(_structured([("id", "<i8"), ("embedding", "<f4")])), 3,
                           "expected (n_faces, dim)"),
    "3-D embeddings": Case(_npy(_structured([("id", "<i8"), ("embedding", "<f4", (4, 8))])), 3,
                           f"shape ({N}, 4, 8)"),
    "ragged Parquet vectors": Case(_ragged_parquet(), 3, "different lengths"),
    "ids longer than embeddings": Case(_npz(ids=IDS[:-3], embeddings=VECTORS), 3, f"({N - 3},) ids for {N}"),
    "no faces": Case(_npz(ids=IDS[:0], embeddings=VECTORS[:0]), 3, "the database is empty"),
    "big-endian ids beyond int64": Case(_npz(ids=(IDS.astype(np.uint64) + np.uint64(2**63)).astype(">u8"),
                                             embeddings=VECTORS), 3, "do not fit int64"),
    "ids beyond int64": Case(_npz(ids=IDS.astype(np.uint64) + np.uint64(2**63), embeddings=VECTORS), 3,
                             "do not fit int64"),
    "string ids in Parquet": Case(_parquet(pa.table({"id": IDS.astype(str), "embedding": _vectors_column(VECTORS)})),
                                  3, "ids have dtype object"),
    "empty ids in Parquet": Case(_parquet(pa.table({"id": pa.array([None, *IDS[1:].tolist()], pa.int64()),
                                                    "embedding": _vectors_column(VECTORS)})), 3, "1 empty ids"),
    # values
    "NaN rows": Case(_with_rows({3: np.nan, 17: np.nan}), 3, "2 embeddings hold NaN, inf or values beyond float32 "
                                                              "(rows 3, 17); recompute those faces, or pass "
                                                              "--drop-invalid"),
    "inf rows": Case(_with_rows({8: np.inf}), 3, "(rows 8)"),
    "float64 beyond float32": Case(_with_rows({9: 1e300}, "<f8"), 3, "beyond float32 (rows 9)"),
    "all-zero rows": Case(_with_rows({4: 0.0, 5: 0.0, 6: 0.0}), 3, "3 embeddings are all zeros (rows 4, 5, 6)"),
    "fewer faces than n_neighbors + 1": Case(_npz(ids=IDS[:8], embeddings=VECTORS[:8]), 2, "needs at least 11"),
    "one identity under --supervised": Case(lambda f: [*_npz(ids=np.zeros(40, np.int64), embeddings=VECTORS[:40])(f),
                                                       "--supervised"], 2, "at least two identities"),
    # memory
    ".npz over max_memory": Case(lambda f: [*_npz(ids=IDS, embeddings=VECTORS)(f), "--set", "max_memory=4KiB"], 5,
                                 "the configured max_memory is"),
    "larger than memory (2.2 TB .npy)": Case(_sparse_larger_than_memory, 5, "but available memory is"),
    # config and flags
    "unknown config key": Case(_args("--set", "umap.n_neighbours=30"), 2, "unknown key 'umap.n_neighbours'"),
    "wrong type": Case(_args("--set", "umap.n_neighbors=many"), 2, "key 'umap.n_neighbors' is invalid"),
    "out of range": Case(_args("--set", "umap.min_dist=-1"), 2, "key 'umap.min_dist' is invalid"),
    "n_components 4": Case(_args("--n-components", "4"), 2, "key 'umap.n_components' is invalid"),
    "bad max_memory": Case(_args("--set", "max_memory=lots"), 2, "key 'max_memory' is invalid"),
    "absurd max_memory": Case(_args("--set", "max_memory=99999999999999999999999TB"), 2, "more bytes than any"),
    "true in a list of ids": Case(_args("--set", "render.highlight=[true]"), 2, "not true/false"),
    "true as a number": Case(_args("--set", "umap.n_epochs=true"), 2, "not true/false"),
    "config not TOML": Case(_config_file("[umap\nn_neighbors = 3"), 2, "bad.toml: not valid TOML"),
    "config file missing": Case(lambda f: ["--config", str(f / "none.toml")], 2, "none.toml: cannot read the config"),
    "unknown --highlight ids": Case(_args("--highlight", "0,99999"), 2, "ids 99999 are not in"),
    "--highlight not integers": Case(_args("--highlight", "ada,bob"), 2, "expected comma-separated integer ids"),
    "names file not JSON": Case(_names_file('{"name": "Ada"}\nnot json\n'), 3, "names.jsonl: line 2: not valid JSON"),
    "names file missing": Case(_args("--names", "/nonexistent/names.jsonl"), 3, "cannot read the names file"),
    "--out is a file": Case(_out_is_a_file, 2, "is not a folder"),
    "--out holds another tool's run.json": Case(_out_with_another_tools_run_json, 2,
                                                "holds files no faceatlas run wrote (notes.txt, run.json)"),
    "--out holds other files": Case(_out_holds_foreign_files, 2, "holds files no faceatlas run wrote (thesis.tex)"),
    "malformed --sha256": Case(_args("--sha256", "abc"), 2, "key 'input.sha256' is invalid"),
    "wrong --sha256": Case(_args("--sha256", "0" * 64), 3, "expected " + "0" * 64),
    "--sha256 without --input": Case(lambda f: ["--sha256", "0" * 64], 2, "--sha256 checks an --input file"),
    "plain http URL": Case(lambda f: ["--input", "http://127.0.0.1:9/db.npy"], 2, "plain http"),
    "ftp URL": Case(lambda f: ["--input", "ftp://127.0.0.1/db.npy"], 2, "unsupported URL scheme 'ftp'"),
    "URL with spaces": Case(lambda f: ["--input", "https://127.0.0.1/my faces.npy"], 2, "percent-encode"),
    "URL with a broken host": Case(lambda f: ["--input", "https://[::1/db.npy"], 2, "not a valid URL"),
    "cuML on a machine without it": Case(_args("--backend", "cuml"), 4, "cuml"),
    "--truth file is not ours": Case(_truth_file(NOT_OURS), 3, "db.truth.json: not a faceatlas demo truth file"),
    "--truth names rows beyond the input": Case(_truth_file(ROWS_BEYOND), 3, "names rows beyond the"),
    "--truth file missing": Case(_args("--truth", "/nonexistent/db.truth.json"), 3,
                                 "/nonexistent/db.truth.json: cannot read a demo truth file"),
    "--truth with the built-in demo": Case(lambda f: ["--truth", str(f / "db.truth.json")], 2,
                                           "the built-in demo has its own planted answers; drop --truth"),
    # second round (issue 10): every reader, not only the database loader
    "negative ids": Case(_npz(ids=-IDS - 1, embeddings=VECTORS), 3, "have negative ids"),
    "ids -15..14 (some negative)": Case(_npz(ids=IDS - 15, embeddings=VECTORS), 3, "faceatlas needs ids >= 0"),
    "two id columns in Parquet": Case(_two_id_columns(), 3, "column 'id' appears 2 times"),
    "an .npz member twice": Case(_npz_twice, 3, "holds 'ids.npy' more than once"),
    "config not UTF-8": Case(_config_bytes(b"\xff\xfe[umap]\n"), 2, "is not UTF-8 text"),
    "config nested 100k deep": Case(_config_bytes(f"[umap]\nn_neighbors = {DEEP}\n".encode()), 2,
                                    "nested too deeply"),
    "config integer of 5000 digits": Case(_config_bytes(f"seed = {HUGE_INT}\n".encode()), 2, "more digits"),
    "config is /dev/zero": Case(lambda f: [*_npy(RECORDS)(f), "--config", "/dev/zero"], 2, "not a regular file"),
    "config with a NUL in a path": Case(_config_bytes(b'[input]\nnames = "a\\u0000b"\n'), 2, "NUL"),
    "--set nested 100k deep": Case(_args("--set", f"render.highlight={DEEP}"), 2, "nested too deeply"),
    "--set integer of 5000 digits": Case(_args("--set", f"seed={HUGE_INT}"), 2, "more digits"),
    "--set count beyond 2**62": Case(_args("--set", f"analysis.lookalike_top={2**70}"), 2,
                                     "command line: key 'analysis.lookalike_top' is invalid"),
    "--set max_memory beyond 8 EiB": Case(_args("--set", f"max_memory={2**64}"), 2, "below 8 EiB"),
    "names file is /dev/zero": Case(lambda f: [*_npy(RECORDS)(f), "--names", "/dev/zero"], 3,
                                    "not a regular file"),
    "names file not UTF-8": Case(_names_bytes(b'{"name": "\xff"}\n'), 3, "is not UTF-8 text"),
    "names nested 100k deep": Case(_names_bytes(('{"a": ' * 100_000).encode()), 3, "nested too deeply"),
    "names integer of 5000 digits": Case(_names_bytes(f'{{"id": {HUGE_INT}, "name": "x"}}\n'.encode()), 3,
                                         "more digits"),
    "lone surrogate in a name": Case(_names_bytes(b'{"name": "\\ud800"}\n'), 3, "lone \\ud800"),
    "names by position, one line short": Case(_names_bytes(NAMES_BY_POSITION.encode()), 3,
                                              "29 lines for the 30 identities"),
    "an id named twice": Case(_names_bytes(b'{"id": 1, "name": "a"}\n{"id": 1, "name": "b"}\n'), 3,
                              "names id 1 again (first on line 1)"),
    "--out is a symlink loop": Case(_out_link_loop, 2, "is a symbolic-link loop"),
    "--out name too long": Case(_out_named("a" * 300), 2, "pick a shorter name"),
    "--out name too long with the staging suffix": Case(_out_named("a" * 240), 2, "pick a shorter name"),
    "--out holds names like faceatlas's temporaries": Case(_look_alike_leftovers, 2,
                                                           "holds files no faceatlas run wrote (.draft.2024.tmp, "
                                                           ".staging-1-deadbeef)"),
    # third round (issue 25): no wrong answer with exit 0
    "names id 1.5": Case(_names_bytes(b'{"id": 1.5, "name": "a"}\n'), 3, 'line 1: "id" is 1.5, expected an integer'),
    "names id true": Case(_names_bytes(b'{"id": true, "name": "a"}\n'), 3, 'line 1: "id" is True'),
    "names id text not a number": Case(_names_bytes(b'{"id": "ada", "name": "a"}\n'), 3, 'line 1: "id" is \'ada\''),
    "names name 7 (not text)": Case(_names_bytes(b'{"name": 7, "alias": "A7"}\n'), 3, 'line 1: "name" is 7'),
    "names line without text": Case(_names_bytes(b'{"id": 3, "age": 7}\n'), 3, "line 1 has no text to show"),
    "names with ids on some lines only": Case(_names_bytes(b'{"id": 3, "name": "a"}\n{"name": "b"}\n'), 3,
                                              'line 2 has no "id" key, unlike line 1'),
    "names with a name of 131,073 characters": Case(_names_bytes(b'{"name": "' + b"x" * 131_073 + b'"}\n'), 3,
                                                    "line 1 holds a name of 131,073 characters"),
    "--truth ids not in the input": Case(_truth_file(ROWS_BEYOND.replace('"row": 999999, "true_id": 1',
                                                                         '"row": 1, "true_id": 777777')), 3,
                                         "names identity 777777, which"),
    "umap.spread=1e-300": Case(_args("--set", "umap.spread=1e-300"), 2, "has no positive a and b"),
    "names of another database's ids": Case(_names_bytes(b'{"id": 5000, "name": "a"}\n{"id": 5001, "name": "b"}\n'),
                                            3, "names 2 ids (e.g. id 5000) and none of them is an identity"),
    "--truth row true": Case(_truth_file(ROWS_BEYOND.replace("999999", "true")), 3,
                             "not a faceatlas demo truth file"),
    "--truth row 3.0": Case(_truth_file(ROWS_BEYOND.replace("999999", "3.0")), 3, "not a faceatlas demo truth file"),
    "--truth low-quality rows beyond the input": Case(_truth_file(ROWS_BEYOND.replace(
        '"row": 999999', '"row": 1').replace('"lookalike_pairs": []', '"lookalike_pairs": [], "low_quality_rows": '
                                                                        '[5, 999999]')), 3, "names rows beyond the"),
    "render 10000 x 10000 over max_memory": Case(_args("--set", "render.width=10000", "--set", "render.height=10000",
                                                       "--set", "max_memory=4GiB"), 5,
                                                 "rendering 10000 x 10000 maps needs"),
}


def test_there_are_at_least_thirty_distinct_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_case(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    folder = tmp_path / "in"
    folder.mkdir()
    out = folder / "out"
    args = case.build(folder)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", SMOKE, "--out", str(out), *args])
    assert result.exit_code == case.exit_code, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("faceatlas: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # one line, the last thing said
    assert "Traceback" not in result.output
    assert case.message in errors[0]
    assert ";" in errors[0]  # problem; fix
    assert _snapshot(tmp_path) == before  # nothing written, nothing half-written, nothing staged


@pytest.mark.parametrize("text", [NOT_OURS, ROWS_BEYOND], ids=["not ours", "rows beyond"])
def test_a_bad_truth_file_beside_the_input_is_read_only_when_given(text: str, tmp_path: Path) -> None:
    """A ``db.truth.json`` beside ``db.npy`` is not faceatlas's business unless it is passed with ``--truth``."""
    args = _truth_file(text)(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", SMOKE, "--out", str(tmp_path / "a"), *args[:-2]])
    assert result.exit_code == 0, result.output
    assert "suspect_precision" not in (tmp_path / "a" / "run.json").read_text()
    assert not (tmp_path / "a" / "truth.json").exists()
    refused = CliRunner().invoke(app, ["run", "--config", SMOKE, "--out", str(tmp_path / "b"), *args])
    assert refused.exit_code == 3, refused.output
    errors = [line for line in refused.stderr.splitlines() if line.startswith("faceatlas: error: ")]
    assert len(errors) == 1 and "db.truth.json: " in errors[0] and "drop --truth" in errors[0], refused.stderr
    assert not (tmp_path / "b").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "run", "--config", SMOKE, "--input", str(tmp_path / "x.npy"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 3 and "Traceback" in result.stderr


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and p.stat().st_size < 10**8 else b"")
            for p in sorted(root.rglob("*"))}


def test_the_docs_list_every_case_with_its_exit_code() -> None:
    doc = (ROOT / "docs" / "hostile-input.md").read_text(encoding="utf-8")
    rows = [line for line in doc[doc.index("| case | exit |"):].splitlines() if line.startswith("|")]
    for name, case in CASES.items():
        found = [row for row in rows if name in row]
        assert found and all(row.endswith(f"| {case.exit_code} |") for row in found), name


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "db.npy"
    np.save(path, RECORDS)
    path.chmod(0)
    result = CliRunner().invoke(app, ["run", "-c", SMOKE, "-i", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3 and "Permission denied" in result.stderr and not (tmp_path / "out").exists()


def test_names_keyed_by_text_or_float_ids_name_the_identity_of_their_id(tmp_path: Path) -> None:
    """``{"id": "42"}`` and ``{"id": 42.0}`` name identity 42, wherever the line sits (they were once read by
    line position, giving every identity another person's name)."""
    import json

    identities = sorted(set(IDS.tolist()))
    lines = [{"id": str(i) if k % 2 else float(i), "name": f"person {i}"} for k, i in enumerate(reversed(identities))]
    (tmp_path / "names.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = _npy(RECORDS)(tmp_path)
    result = CliRunner().invoke(app, ["run", "-c", SMOKE, *args, "--names", str(tmp_path / "names.jsonl"),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out" / "names.json").read_text())
    assert dict(zip(written["ids"], written["names"], strict=True)) == {i: f"person {i}" for i in identities}
