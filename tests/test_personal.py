"""Your own genres: harvest, normalise, train by track, save, apply, and the unknown gate."""

from __future__ import annotations

import json
from pathlib import Path

import audiogen
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from libtagger.cli import main
from libtagger.pipeline.batch import genres_of
from libtagger.config import Config
from libtagger.library.db import Head, Library
from libtagger.library.personal import (
    PersonalHead,
    _fit,
    genre_key,
    harvest,
    track_folds,
    wilson_interval,
)
from libtagger.library.tags import read_genres

RATE = 44100


def drone(seed: int, seconds: float = 10.0) -> np.ndarray:
    """'Deep Drone': slow low sine pads, no beat."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f = rng.uniform(45, 70)
    x = sum(np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6)) / k for k in (1, 1.5, 2))
    return np.vstack([0.3 * x * (0.7 + 0.3 * np.sin(2 * np.pi * 0.2 * t))] * 2).astype(np.float32)


def noise_storm(seed: int, seconds: float = 10.0) -> np.ndarray:
    """'Hard Noise': dense noise bursts and a square wave at a fast tempo."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    beat = 60.0 / rng.uniform(165, 180)
    bursts = ((t % beat) < beat * 0.5) * rng.normal(0, 0.5, t.size)
    square = 0.2 * np.sign(np.sin(2 * np.pi * rng.uniform(90, 130) * t))
    return np.vstack([np.clip(bursts + square, -1, 1)] * 2).astype(np.float32)


def bells(seed: int, seconds: float = 10.0) -> np.ndarray:
    """'Glass Bells': sparse, high, decaying tones."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.zeros(n)
    for start in range(0, n, int(RATE * rng.uniform(0.4, 0.7))):
        f = rng.uniform(1500, 3500)
        t = np.arange(n - start) / RATE
        x[start:] += 0.3 * np.sin(2 * np.pi * f * t) * np.exp(-6 * t)
    return np.vstack([np.clip(x, -1, 1)] * 2).astype(np.float32)


FAMILIES = {"Deep Drone": drone, "Hard Noise": noise_storm, "Glass Bells": bells}
# How users spell them: grouping must put these together.
SPELLINGS = {"Deep Drone": ["Deep Drone", "deep-drone", "DEEP DRONE"],
             "Hard Noise": ["Hard Noise", "hard noise"], "Glass Bells": ["Glass Bells"]}


def tagged_library(base: Path) -> tuple[Path, Path, dict[str, Path], Path]:
    """5 user-tagged tracks per family under Music, 1 untagged each under Incoming, and a
    config: (root, incoming, the untagged track of each genre, config)."""
    root = base / "Music"
    incoming = base / "Incoming"
    fresh = {}
    for f, (genre, make) in enumerate(FAMILIES.items()):
        folder = root / genre
        folder.mkdir(parents=True)
        for i in range(5):
            path = audiogen.write(folder / f"t{i}.flac", make(100 * f + i), rate=RATE)
            audiogen.set_genre(path, [SPELLINGS[genre][i % len(SPELLINGS[genre])]])
        (incoming / genre).mkdir(parents=True)
        fresh[genre] = audiogen.write(incoming / genre / "new.flac", make(100 * f + 50),
                                      rate=RATE)
    config = base / "config.toml"
    config.write_text("[library]\nsettle_seconds = 0\n[personal]\nmin_tracks = 4\n")
    return root, incoming, fresh, config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A scanned library: 5 user-tagged tracks per family, 1 untagged each; then `learn`."""
    base = tmp_path_factory.mktemp("personal")
    root, incoming, fresh, config = tagged_library(base)
    db = base / "lib.db"
    runner = CliRunner()
    scan = runner.invoke(main, ["--config", str(config), "--db", str(db), "scan", "--jobs", "1",
                                str(root), str(incoming)])
    assert scan.exit_code == 0, scan.output
    ours = {genre: read_genres(path) for genre, path in fresh.items()}  # default genres
    out = base / "report"
    result = runner.invoke(main, ["--config", str(config), "--db", str(db), "learn",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"root": root, "incoming": incoming, "db": db, "config": config, "fresh": fresh, "ours": ours,
            "out": out, "output": result.stdout}


def test_genre_keys_group_spellings_and_aliases():
    aliases = {genre_key("DnB"): genre_key("Drum & Bass")}
    spellings = ["Drum & Bass", "drum and bass", "Drum 'n' Bass", "DRUM N BASS", "drum&bass"]
    assert {genre_key(s) for s in spellings} == {genre_key("Drum & Bass")}
    assert genre_key("DnB", aliases) == genre_key("Drum & Bass")
    assert genre_key("Deep House") != genre_key("House")
    assert genre_key("Hip-Hop") == genre_key("hip hop")


def test_folds_never_split_a_track():
    groups = np.repeat(np.arange(30), 4)  # 30 tracks, 4 windows each
    y = np.repeat(np.arange(30) % 3, 4)
    for train, test in track_folds(y, groups, 5):
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test]) == {0, 1, 2}  # every genre in every test fold


def test_wilson_interval_is_wide_for_few_tracks():
    low, high = wilson_interval(4, 5)
    assert low < 0.4 and high > 0.95
    narrow = wilson_interval(800, 1000)
    assert narrow[1] - narrow[0] < 0.06
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_head_round_trips_and_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1.0, (40, 8)) for c in (0, 2, 4)]).astype(np.float32)
    y = np.repeat([0, 1, 2], 40)
    mean, scale, coef, intercept = _fit(x, y)
    head = PersonalHead(["a", "b", "c"], mean, scale, coef, intercept, "m")
    loaded = PersonalHead.from_bytes(head.to_bytes())
    reference = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5)
    reference.fit((x - mean) / scale, y)
    np.testing.assert_allclose(loaded.window_probabilities(x),
                               reference.predict_proba((x - mean) / scale), atol=1e-4)
    assert loaded.genres == ["a", "b", "c"] and loaded.model == "m"


def test_harvest_takes_only_the_users_tags(trained):
    config = Config()
    found = harvest(Library(trained["db"]), config, genres_of(config))
    assert len(found) == 15  # the three files whose genre we wrote are not the user's
    assert {t.genre for t in found} >= {"Deep Drone", "deep-drone", "Hard Noise"}
    assert len({t.key for t in found}) == 3
    assert all(t.embeddings.shape[1] == 896 for t in found)  # every backbone, side by side


def test_learn_reports_cross_validated_accuracy_and_activates_the_head(trained):
    report = json.loads((trained["out"] / "learn.json").read_text())
    assert report["personal"]["tracks"] == 15
    assert report["personal"]["accuracy"] >= 0.9  # separable by construction
    assert set(report["genres"]) == set(FAMILIES)
    assert report["activated"] is True
    assert "default genres" in trained["output"] and "95% interval" in trained["output"]
    png = (trained["out"] / "learn-confusion.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    with Library(trained["db"]).session() as session:
        head = session.scalars(select(Head).where(Head.active.is_(True))).one()
        assert head.tracks == 15
        assert set(PersonalHead.from_bytes(head.data).genres) == set(report["genres"])


def test_scan_writes_your_genres_and_evaluate_uses_the_head(trained):
    runner = CliRunner()
    args = ["--config", str(trained["config"]), "--db", str(trained["db"])]
    # Default policy (fill_empty): the genres libtagger wrote before are its own to update.
    result = runner.invoke(main, [*args, "scan", "--jobs", "1", "--force",
                                  str(trained["incoming"])])
    assert result.exit_code == 0, result.output
    for genre, path in trained["fresh"].items():
        assert read_genres(path) == [genre], (genre, trained["ours"][genre])
    evaluation = runner.invoke(main, [*args, "evaluate", str(trained["incoming"]), "--model",
                                      "personal", "--out", str(trained["out"] / "eval"),
                                      "--jobs", "1"])
    assert evaluation.exit_code == 0, evaluation.output
    assert "accuracy: 100.0%" in evaluation.stdout
    assert "trained this head" not in evaluation.stderr
    # Measured on its own training tracks a head looks better than it is: say so.
    on_training = runner.invoke(main, [*args, "evaluate", str(trained["root"]), "--model",
                                       "personal", "--out", str(trained["out"] / "eval2"),
                                       "--jobs", "1"])
    assert "warning: 15 of 15 tracks here trained this head" in on_training.stderr


def test_below_the_gate_a_track_is_unknown_and_nothing_is_written(trained, tmp_path):
    config = tmp_path / "strict.toml"
    config.write_text("[library]\nsettle_seconds = 0\n[personal]\nmin_tracks = 4\nmin_probability = 1.0\n")
    probe = audiogen.write(tmp_path / "probe.flac", bells(999), rate=RATE)
    result = CliRunner().invoke(main, ["--config", str(config), "--db", str(trained["db"]),
                                       "scan", "--jobs", "1", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert read_genres(probe) == []
    assert "classified 1, wrote 0 tags" in result.stdout


def test_a_worse_head_does_not_replace_the_active_one(trained):
    with Library(trained["db"]).session() as session:
        session.execute(update(Head).where(Head.active.is_(True))
                        .values(metrics={"accuracy": 1.01}))
    result = CliRunner().invoke(main, ["--config", str(trained["config"]), "--db",
                                       str(trained["db"]), "learn", "--out",
                                       str(trained["out"] / "again"), str(trained["root"])])
    assert result.exit_code == 0, result.output
    assert "saved but not activated" in result.stdout
    with Library(trained["db"]).session() as session:
        active = session.scalars(select(Head).where(Head.active.is_(True))).all()
        assert len(active) == 1 and active[0].metrics["accuracy"] == 1.01


def test_learn_without_enough_tags_says_so(tmp_path):
    db = tmp_path / "lib.db"
    Library(db)
    result = CliRunner().invoke(main, ["--db", str(db), "learn", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "need at least 2 genres" in result.stderr


def test_a_genre_restored_by_undo_is_the_users_own(tmp_path):
    """Regression: the undo's own write record made the restored genre look like ours."""
    root = tmp_path / "Music"
    root.mkdir()
    path = audiogen.write(root / "polka.flac", drone(7), rate=RATE)
    audiogen.set_genre(path, ["Polka"])
    db = tmp_path / "lib.db"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", str(db), "scan", "--jobs", "1", "--policy", "replace",
                                str(root)]).exit_code == 0
    config = Config()
    assert read_genres(path) != ["Polka"]  # the tree wrote a genre over the user's
    assert runner.invoke(main, ["--db", str(db), "undo", str(path)]).exit_code == 0
    assert read_genres(path) == ["Polka"]
    found = harvest(Library(db), config, genres_of(config))
    assert [t.genre for t in found] == ["Polka"]


def test_learn_and_apply_your_genres_on_postgresql(tmp_path, pg_url):
    """learn on a PostgreSQL database: the head is stored in it, and a scan applies it."""
    root, incoming, fresh, config = tagged_library(tmp_path)
    args = ["--config", str(config), "--db", pg_url]
    runner = CliRunner()
    scan = runner.invoke(main, [*args, "scan", "--jobs", "1", str(root)])
    assert scan.exit_code == 0, scan.output
    learned = runner.invoke(main, [*args, "learn", "--out", str(tmp_path / "report")])
    assert learned.exit_code == 0 and "is now active" in learned.stdout, learned.output
    scan = runner.invoke(main, [*args, "scan", "--jobs", "1", str(incoming)])
    assert scan.exit_code == 0, scan.output
    assert {genre: read_genres(path) for genre, path in fresh.items()} == {
        genre: [genre] for genre in fresh}
