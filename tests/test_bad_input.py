"""Bad input gets a clear one-line error or a sensible result, never a traceback."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import audiogen
import numpy as np
import pytest
from click.testing import CliRunner

from libtagger.analysis.classify import Failure, classify_or_fail
from libtagger.cli import main
from libtagger.errors import DecodeError


def _failure(classifier, path) -> Failure:
    result = classify_or_fail(classifier, str(path))
    assert isinstance(result, Failure), f"expected a failure, got {result}"
    assert "\n" not in result.reason
    return result


@pytest.fixture(scope="module")
def mp3_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("src") / "src.mp3"
    return audiogen.write(path, audiogen.music(60.0, seed=5)).read_bytes()


def test_zero_byte_file(classifier, tmp_path):
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    assert _failure(classifier, path).reason == "empty file (0 bytes)"


def test_random_bytes_named_mp3(classifier, tmp_path):
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).bytes(100_000))
    assert "no decodable audio" in _failure(classifier, path).reason


def test_text_file_named_flac(classifier, tmp_path):
    path = tmp_path / "notes.flac"
    path.write_text("this is a shopping list, not a song\n" * 200)
    assert "no decodable audio" in _failure(classifier, path).reason


def test_missing_file_and_directory(classifier, tmp_path):
    assert "No such file" in _failure(classifier, tmp_path / "gone.mp3").reason
    assert "directory" in _failure(classifier, tmp_path).reason


def test_a_truncated_mp3_is_failed_not_classified(classifier, tmp_path, mp3_bytes):
    # An interrupted copy: the header says 1:00, the audio stops at 0:20. Its genres would be
    # those of its first third; it is reported instead (regression: it was tagged).
    path = tmp_path / "truncated.mp3"
    path.write_bytes(mp3_bytes[: len(mp3_bytes) // 3])
    assert _failure(classifier, path).reason == "truncated (header 1:00, audio 0:20)"
    whole = tmp_path / "whole.mp3"
    whole.write_bytes(mp3_bytes)
    assert classifier.classify(whole).genres  # the complete file is fine


def test_mp3_with_corrupt_frames_skips_them(classifier, tmp_path, mp3_bytes):
    damaged = bytearray(mp3_bytes)
    for i in range(len(damaged) // 4, len(damaged) // 2, 7):
        damaged[i] ^= 0x5A
    path = tmp_path / "damaged.mp3"
    path.write_bytes(bytes(damaged))
    result = classifier.classify(path, timeline=True)
    assert result.genres
    assert result.duration > 40  # the audio after the damage is still read


def test_audio_shorter_than_one_window(classifier, tmp_path):
    path = audiogen.write(tmp_path / "blip.wav", audiogen.music(1.0))
    result = classifier.classify(path)
    assert result.windows == 1 and result.genres
    assert result.duration == pytest.approx(1.0, abs=0.01)


def test_silence_gives_no_genre(classifier, tmp_path):
    path = audiogen.write(tmp_path / "silence.flac", np.zeros((2, 44100 * 30), np.float32))
    result = classifier.classify(path)
    assert result.silent and result.genres == []
    assert result.to_dict()["silent"] is True


def test_non_utf8_and_very_long_names(classifier, tmp_path):
    source = audiogen.write(tmp_path / "x.ogg", audiogen.music(8.0))
    latin1 = os.path.join(os.fsencode(tmp_path), b"caf\xe9.ogg")
    os.rename(source, latin1)
    result = classifier.classify(os.fsdecode(latin1))
    assert result.genres
    # classify --json: valid UTF-8 JSON, the exact name in path_bytes (regression: raw bytes)
    record = json.loads(json.dumps(result.to_dict(), ensure_ascii=False).encode().decode())
    assert record["path"].endswith("caf\ufffd.ogg")
    assert base64.b64decode(record["path_bytes"]) == latin1
    long_name = tmp_path / ("a" * 250 + ".wav")
    audiogen.write(long_name, audiogen.music(4.0))
    assert classifier.classify(long_name).genres


def test_unreadable_file(classifier, tmp_path):
    path = audiogen.write(tmp_path / "private.wav", audiogen.music(4.0))
    path.chmod(0)
    if os.geteuid() != 0:
        assert "Permission denied" in _failure(classifier, path).reason
        return
    # Root reads anything: check as an unprivileged user in a forked child.
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = classify_or_fail(classifier, str(path))
            os.write(write_end, getattr(result, "reason", "classified!").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        assert pipe.read() == "cannot open: Permission denied"


def test_strict_api_raises_decode_error(classifier, tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(DecodeError) as info:
        classifier.classify(path)
    assert info.value.path == str(path)


def test_cli_reports_each_bad_file_and_finishes_the_rest(tmp_path):
    good = audiogen.write(tmp_path / "good.flac", audiogen.music(8.0))
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "text.flac").write_text("not audio\n" * 50)
    bad = [tmp_path / "empty.mp3", tmp_path / "text.flac", tmp_path / "missing.ogg"]
    runner = CliRunner()
    result = runner.invoke(main, ["classify", "--jobs", "1", *map(str, bad), str(good)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert str(good) in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "3 of 4 files failed" in result.stderr
    assert Path(good).exists()
