from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from job.config import Config, known_keys, load_config, parse_assignment
from job.errors import UsageError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))


def _flatten(table: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in table.items():
        keys |= _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_config_files_are_the_ones_the_issue_names() -> None:
    names = {p.name for p in CONFIGS}
    assert {"default.toml", "seed-unsupervised.toml", "seed-supervised.toml", "smoke.toml"} <= names


def test_default_toml_equals_code_defaults_and_lists_every_key() -> None:
    path = Path(__file__).parents[2] / "configs" / "default.toml"
    assert load_config(path) == Config()
    assert _flatten(tomllib.loads(path.read_text())) == set(known_keys())


def test_seed_configs_differ_only_in_supervision_and_folder() -> None:
    by_name = {p.name: load_config(p).model_dump() for p in CONFIGS}
    supervised, unsupervised = by_name["seed-supervised.toml"], by_name["seed-unsupervised.toml"]
    assert supervised["umap"].pop("supervised") and not unsupervised["umap"].pop("supervised")
    supervised.pop("out"), unsupervised.pop("out")
    assert supervised == unsupervised
    assert supervised["umap"]["metric"] == "cosine"


def test_min_dist_above_spread_is_refused() -> None:
    with pytest.raises(UsageError, match=r"min_dist \(2.0\) must not exceed spread"):
        load_config(None, {"umap.min_dist": 2.0})


def test_set_overrides_any_key() -> None:
    config = load_config(None, dict([parse_assignment("umap.n_neighbors=30"), parse_assignment("umap.metric=euclidean"),
                                     parse_assignment("render.highlight=[3, 4]"), parse_assignment("seed=none")]))
    assert config.umap.n_neighbors == 30
    assert config.umap.metric == "euclidean"
    assert config.render.highlight == [3, 4]
    assert config.seed is None


def test_unknown_key_is_named() -> None:
    with pytest.raises(UsageError, match=r"unknown key 'umap\.n_neighbours'.*umap\.n_neighbors"):
        load_config(None, {"umap.n_neighbours": 30})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("umap.n_neighbors", 1, "umap.n_neighbors"), ("umap.metric", "hamming", "umap.metric"),
     ("backend", "tpu", "backend"), ("umap.n_components", 4, "umap.n_components"),
     ("umap.n_epochs", 0, "umap.n_epochs"), ("render.width", "wide", "render.width")],
)
def test_bad_values_name_the_dotted_key(key: str, value: object, expected: str) -> None:
    with pytest.raises(UsageError, match=f"key '{expected}' is invalid"):
        load_config(None, {key: value})


def test_bad_toml_and_missing_file_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("umap = [\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(UsageError, match="cannot read the config"):
        load_config(tmp_path / "missing.toml")


def test_assignment_needs_an_equals_sign() -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_assignment("umap.n_neighbors")
