"""The job config loader refuses bad input with one line naming key, value and rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prunesearch.cluster.config import (
    JobConfig,
    config_to_dict,
    dump_config,
    load_config,
    parse_overrides,
)
from prunesearch.search.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, JobConfig)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"serch": {}}, "unknown key 'serch' (did you mean 'search'?)"),
        ({"search": {"budgett": 3}}, "unknown key 'search.budgett'"),
        ({"search": {"budget": 0}}, "search.budget: 0 is below the minimum 1"),
        ({"search": {"budget": "many"}}, "search.budget: 'many' is not an int"),
        ({"search": {"budget": 2.5}}, "search.budget: 2.5 is not an int"),
        ({"hardware": {"runtime": "tensorrt"}}, "hardware.runtime: 'tensorrt' is not allowed; "
                                                "choose one of: eager, cuda-graph, compile"),
        ({"method": "hampp"}, "method: 'hampp' is not allowed"),
        ({"search": {"portfolio": ["nsga2", "moead"]}}, "search.portfolio: 'moead' is not allowed"),
        ({"data": {"download": "yes"}}, "data.download: 'yes' is not a bool"),
        ({"search": {"local_search": {"parents": -1}}}, "search.local_search.parents: -1 is below"),
        ({"search": 5}, "search: expected a mapping of settings"),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_rule(raw, message):
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid keys: .*budget.*pop_size"):
        load_config({"search": {"bugdet": 1}})


def test_set_overrides_any_key_and_parses_yaml_scalars():
    config = load_config({"search": {"budget": 10}}, ["search.budget=40", "hardware.dtype=float16",
                                                      "search.local_search.parents=3",
                                                      "cluster.accelerator_type=H100"])
    assert config.search.budget == 40
    assert config.hardware.dtype == "float16"
    assert config.search.local_search.parents == 3
    assert config.cluster.accelerator_type == "H100"


def test_set_override_is_validated_too():
    with pytest.raises(ConfigError, match="search.pop_size: 1 is below the minimum 4"):
        load_config({}, ["search.pop_size=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_overrides(["search.pop_size"])


def test_malformed_and_multi_document_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    multi = tmp_path / "multi.yaml"
    multi.write_text("seed: 1\n---\nseed: 2\n")
    with pytest.raises(ConfigError, match="holds 2 YAML documents"):
        load_config(multi)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_paths_are_made_absolute_and_config_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({"data": {"root": "data"}, "model": {"checkpoint": "w.pt"},
                          "storage": "mirror"})
    assert config.data.root == str(tmp_path / "data")
    assert config.model.checkpoint == str(tmp_path / "w.pt")
    assert config.storage == f"file://{tmp_path / 'mirror'}"
    dump_config(config, tmp_path / "config.yaml")
    again = load_config(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == config
    assert config_to_dict(again) == config_to_dict(config)


def test_config_is_frozen():
    config = load_config({})
    with pytest.raises(AttributeError):
        config.seed = 3  # type: ignore[misc]
