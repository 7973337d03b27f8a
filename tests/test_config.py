"""Config: TOML to frozen objects, defaults in one place, errors that name the key."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import REPO

from libtagger.config import INT_RANGES, Config, GenreNode, config_from_dict, load_config
from libtagger.errors import ConfigError


def test_example_config_is_exactly_the_defaults():
    assert dataclasses.replace(load_config(REPO / "config.example.toml"), source=None) == Config()


def test_missing_default_config_means_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("LIBTAGGER_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_config() == Config()


def test_a_missing_config_named_by_the_environment_is_an_error(tmp_path, monkeypatch):
    # Regression: $LIBTAGGER_CONFIG naming a missing file was silently ignored.
    monkeypatch.setenv("LIBTAGGER_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"absent.toml \(from \$LIBTAGGER_CONFIG\)"):
        load_config()


def test_explicit_missing_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_values_are_read_and_frozen(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[classifier]\nwindows = 4\nmodels = ["msd_vgg"]\nmin_score = 0\n'
                    '[genres]\n"Guitar Music" = ["rock", "guitar"]\n')
    config = load_config(path)
    assert config.classifier.windows == 4
    assert config.classifier.models == ("msd_vgg",)
    assert config.classifier.min_score == 0.0
    assert config.genres == (GenreNode("Guitar Music", ("rock", "guitar")),)  # the old flat form
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.classifier.windows = 9  # type: ignore[misc]


def test_the_genre_tree_is_read_and_checked(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[genres]\nElectronic = { tags = ["electronic"] }\n'
                    'House = { tags = ["house", "House music"], parent = "Electronic" }\n')
    assert load_config(path).genres == (
        GenreNode("Electronic", ("electronic",)),
        GenreNode("House", ("house", "House music"), "Electronic"))
    path.write_text('[genres]\nHouse = { tags = ["house"], parent = "Electronik" }\n')
    with pytest.raises(ConfigError, match="'Electronik' is not a broad genre"):
        load_config(path)
    path.write_text('[genres]\nHouse = { tag = ["house"] }\n')
    with pytest.raises(ConfigError, match="genres.House must be"):
        load_config(path)
    path.write_text('[tags]\nlevel = "subgenre"\n')
    with pytest.raises(ConfigError, match="tags.level must be one of style, genre"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[classifier]\nwindow = 4\n", "classifier.window"),
        ("[classifer]\n", "classifer"),
        ("[classifier]\nwindows = 'many'\n", "classifier.windows must be a whole number"),
        ("[classifier]\nwindows = 0\n", "classifier.windows must be from 1 to 64, not 0"),
        ("[classifier]\nedge_skip = 0.7\n", "classifier.edge_skip"),
        ("[classifier]\nmodels = []\n", "classifier.models"),
        ("[genres]\nRock = 'rock'\n", "genres.Rock"),
        ("[classifier\n", "not valid TOML"),
        # TOML has nan and inf; found by tests/test_fuzz.py (a NaN quiet period never ends).
        ("[watch]\nquiet_seconds = inf\n", "watch.quiet_seconds must be a finite number"),
        ("[limits]\nseconds_per_file = nan\n", "limits.seconds_per_file must be a finite"),
        # Each once passed validation and failed later, far from the config (a pool of 10**30
        # processes; setrlimit overflowing in every worker; a cut of 10**12 genres).
        ("[library]\njobs = 1000000000000000000000000000000\n", "library.jobs must be from 0"),
        ("[limits]\nmemory_mb = 100000000000000\n", "limits.memory_mb must be from 0 to"),
        ("[tags]\nmax_genres = 999999999999\n", "tags.max_genres must be from 1 to 10"),
        ("[library]\njobs = -1\n", "library.jobs must be from 0 to 256, not -1"),
        ("[limits]\nmax_tag_items = 0\n", "limits.max_tag_items must be from 1"),
        ("[limits]\nseconds_per_file = 0\n", "limits.seconds_per_file must be more than 0"),
        ("[personal]\nfolds = 1\n", "personal.folds must be from 2 to 100"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


def test_every_whole_number_setting_has_a_range_holding_its_default():
    defaults = Config()
    ints = {f"{section.name}.{f.name}": getattr(getattr(defaults, section.name), f.name)
            for section in dataclasses.fields(Config)
            if dataclasses.is_dataclass(getattr(defaults, section.name))
            for f in dataclasses.fields(getattr(defaults, section.name))
            if type(getattr(getattr(defaults, section.name), f.name)) is int}
    assert "library.jobs" in ints and "limits.memory_mb" in ints  # the walk finds them
    assert set(ints) == set(INT_RANGES)
    for key, default in ints.items():
        low, high = INT_RANGES[key]
        section, name = key.split(".")
        assert low <= default <= high, key
        # Both ends are accepted, one past either end is refused with the key's name.
        for value in (low, high):
            assert getattr(getattr(config_from_dict({section: {name: value}}), section),
                           name) == value
        for value in (low - 1, high + 1):
            with pytest.raises(ConfigError, match=rf"{key} must be from {low} to {high}"):
                config_from_dict({section: {name: value}})
