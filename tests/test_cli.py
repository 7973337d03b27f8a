"""The command line, through Click's runner and as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import audiogen
import pytest
from click.testing import CliRunner
from conftest import REPO

from libtagger import TrackResult, classify_file
from libtagger.cli import main


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_classify_prints_top_genres_per_file(runner, audio_dir):
    files = [str(audio_dir / f"song.{fmt}") for fmt in sorted(audiogen.ENCODINGS)]
    result = runner.invoke(main, ["classify", "--jobs", "1", *files])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    for line in lines:
        genres = line.split("\t")[1].split(", ")
        assert 1 <= len(genres) <= 3
        for item in genres:
            name, score = item.rsplit(" ", 1)
            assert name and 0.0 <= float(score) <= 1.0


def test_json_lines_have_the_documented_fields(runner, audio_dir):
    files = [str(audio_dir / "song.mp3"), str(audio_dir / "song.opus")]
    result = runner.invoke(main, ["classify", "--json", "--jobs", "1", *files])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == files
    for r in records:
        assert r["model"] == "msd_vgg+mtt_vgg+mn04_as"
        assert r["duration"] == pytest.approx(20.0, abs=0.1)
        assert r["windows"] == 2  # two 10-s stretches: all of a 20-s file
        decided = r["decision"]["genres"]
        assert set(r["decision"]) == {"genres", "level", "confidence", "reason", "networks",
                                      "candidate"}
        assert [g["genre"] for g in r["genres"][: len(decided)]] == decided
        rest = [g["score"] for g in r["genres"][len(decided):]]
        assert rest == sorted(rest, reverse=True) and 1 <= len(r["genres"]) <= 3
        assert all(set(g) == {"genre", "score", "confidence"} for g in r["genres"])
        assert "timeline" not in r
    # --format csv: the same results, one row per file under a header.
    result = runner.invoke(main, ["classify", "--format", "csv", "--jobs", "1", *files])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == files
    for row, r in zip(rows, records, strict=True):
        assert row["genre"] == r["genres"][0]["genre"]
        assert float(row["score"]) == pytest.approx(r["genres"][0]["score"])
        assert row["genres"] == "; ".join(g["genre"] for g in r["genres"])
        assert row["writes"] == "; ".join(r["decision"]["genres"])
        assert row["reason"] == r["decision"]["reason"] and row["path_bytes"] == ""


def test_windows_flag_adds_the_timeline(runner, long_mp3):
    result = runner.invoke(main, ["classify", "--json", "--windows", str(long_mp3)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    timeline = record["timeline"]
    assert len(timeline) == record["windows"] == 9  # 90 s in 10-s stretches
    starts = [w["start"] for w in timeline]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert all(w["genre"] and 0 <= w["score"] <= 1 for w in timeline)
    text = runner.invoke(main, ["classify", "--windows", str(long_mp3)])
    assert text.stdout.count("\n") == 10 and "0:00 - 0:10" in text.stdout


def test_sampled_windows_agree_with_the_full_timeline(classifier, long_mp3):
    sampled = classifier.classify(long_mp3)
    full = classifier.classify(long_mp3, timeline=True)
    assert sampled.windows == 4 and full.windows == 9
    assert sampled.genres[0].genre == full.genres[0].genre


def test_worker_pool_gives_the_same_results(runner, audio_dir):
    files = [str(audio_dir / f"song.{fmt}") for fmt in ("flac", "wav", "aiff")]
    one = runner.invoke(main, ["classify", "--json", "--jobs", "1", *files])
    two = runner.invoke(main, ["classify", "--json", "--jobs", "2", *files])
    assert one.exit_code == two.exit_code == 0
    assert one.stdout == two.stdout


def test_folders_are_searched_for_audio(runner, audio_dir):
    result = runner.invoke(main, ["classify", "--jobs", "1", str(audio_dir)])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == len(audiogen.ENCODINGS)


def test_model_and_top_options(runner, audio_dir, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[classifier]\nmin_score = 0.0\n")
    result = runner.invoke(main, ["--config", str(config), "classify", "--json", "--model",
                                  "msd_vgg", "--top", "5", str(audio_dir / "song.wav")])
    record = json.loads(result.stdout)
    assert record["model"] == "msd_vgg" and len(record["genres"]) == 5


def test_bad_config_is_fatal_with_the_key_named(runner, tmp_path, audio_dir):
    config = tmp_path / "c.toml"
    config.write_text("[classifier]\nwindowz = 3\n")
    result = runner.invoke(main, ["--config", str(config), "classify", str(audio_dir / "song.wav")])
    assert result.exit_code == 2
    assert "classifier.windowz" in result.stderr


def test_unknown_model_is_fatal(runner, audio_dir):
    result = runner.invoke(main, ["classify", "--model", "nope", str(audio_dir / "song.wav")])
    assert result.exit_code == 2 and "unknown model 'nope'" in result.stderr


def test_models_command_lists_licence_and_runtime(runner):
    result = runner.invoke(main, ["models"])
    assert result.exit_code == 0
    assert "ai-edge-litert" in result.stdout or "tflite-runtime" in result.stdout
    assert result.stdout.count("ISC") == 4


def test_evaluate_writes_metrics_json_and_png(runner, tmp_path):
    library = tmp_path / "labelled"
    for genre, (tempo, root) in {"Hip-Hop": (90, 110.0), "electronic": (128, 220.0)}.items():
        (library / genre).mkdir(parents=True)
        for i in range(2):
            audiogen.write(library / genre / f"t{i}.flac",
                           audiogen.music(12.0, seed=i, tempo=tempo, root=root))
    out = tmp_path / "report"
    result = runner.invoke(main, ["evaluate", str(library), "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["tracks"] == 4
    correct = sum(f["correct"] for f in report["files"])
    assert report["accuracy"] == pytest.approx(correct / 4)
    matrix = report["confusion_matrix"]
    assert sum(map(sum, matrix["matrix"])) == 4
    assert {"Hip-Hop", "electronic"} <= set(matrix["labels"])
    assert set(report["per_genre"]) == {"Hip-Hop", "electronic"}
    png = (out / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert f"accuracy: {report['accuracy']:.1%}" in result.stdout
    # What users care about: what the gates would write, and how precision trades coverage.
    written = report["written"]
    assert written["tracks"] == 4 and 0 <= written["written"] <= 4
    assert written["coverage"] == pytest.approx(written["written"] / 4)
    curve = written["curve"]
    assert [c["gate"] for c in curve][:3] == [0.0, 0.05, 0.1] and curve[-1]["gate"] == 1.0
    coverages = [c["coverage"] for c in curve]
    assert coverages == sorted(coverages, reverse=True)  # a higher gate never writes more
    assert "written at the configured gates: " in result.stdout
    curve_png = (out / "precision_coverage.png").read_bytes()
    assert curve_png[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_folder_matching_is_normalised(runner, tmp_path):
    from libtagger.pipeline.batch import classify_many
    from libtagger.config import Config
    from libtagger.analysis.evaluate import evaluate, labelled_files

    folder = tmp_path / "set" / "electronic"
    folder.mkdir(parents=True)
    path = audiogen.write(folder / "a.wav", audiogen.music(8.0))
    labelled = labelled_files(tmp_path / "set")
    results = list(classify_many([p for p, _ in labelled], Config()))
    report = evaluate([(str(path), "ELECTRONIC")], results)
    assert report.files[0]["correct"] == (results[0].genres[0].genre == "Electronic")


def test_python_api(audio_dir):
    result = classify_file(audio_dir / "song.m4a")
    assert isinstance(result, TrackResult)
    # One embedding per stretch: musicnn's two (256 + 256, averaged over its windows) and
    # EfficientAT's (384), side by side.
    assert result.genres and result.embeddings.shape == (result.windows, 896)


def test_installed_console_script_runs(audio_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "libtagger", "classify", "--json", str(audio_dir / "song.flac")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"].endswith("song.flac")
    assert proc.stderr == ""
