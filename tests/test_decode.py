"""Every format decodes to 16 kHz mono windows; seeking reads the same audio as streaming."""

from __future__ import annotations

import audiogen
import numpy as np
import pytest

from libtagger.analysis.audio import AudioFile, FrontEnd

FE = FrontEnd()


@pytest.mark.parametrize("fmt", sorted(audiogen.ENCODINGS))
def test_every_format_decodes_whole(audio_dir, fmt):
    with AudioFile(audio_dir / f"song.{fmt}", FE) as audio:
        windows = list(audio.iter_windows())
        assert audio.decode_errors == 0
        # Encoders add a little priming/padding; the length must still be about 20 s.
        assert audio.decoded_seconds == pytest.approx(20.0, abs=0.1)
    assert len(windows) == 7  # six full 2.992 s windows and a final partial one
    assert all(w.samples.shape == (FE.window_samples,) for w in windows)
    assert all(w.samples.dtype == np.float32 for w in windows)
    assert not any(w.silent for w in windows)


@pytest.mark.parametrize(
    ("name", "channels", "rate", "codec"),
    [("mono.wav", 1, 44100, None), ("surround.flac", 6, 48000, None),
     ("hires.flac", 2, 96000, None), ("eight_bit.wav", 1, 22050, "pcm_u8")],
)
def test_channel_layouts_rates_and_bit_depths(tmp_path, name, channels, rate, codec):
    path = audiogen.write(tmp_path / name, audiogen.music(7.0, rate=rate, channels=channels),
                          rate=rate, codec=codec)
    with AudioFile(path, FE) as audio:
        assert audio.info.channels == channels and audio.info.sample_rate == rate
        windows = list(audio.iter_windows())
        assert audio.decoded_seconds == pytest.approx(7.0, abs=0.05)
    # Channels are averaged, not summed: a mono copy of the same music has the same level.
    level = np.mean([w.rms_dbfs for w in windows])
    assert -25 < level < -5


def test_downmix_averages_channels(tmp_path):
    mono = audiogen.music(4.0, channels=1)
    stereo = np.vstack([mono, mono])
    a = audiogen.write(tmp_path / "mono.wav", mono)
    b = audiogen.write(tmp_path / "stereo.wav", stereo)
    with AudioFile(a, FE) as fa, AudioFile(b, FE) as fb:
        wa, wb = next(fa.iter_windows()), next(fb.iter_windows())
    np.testing.assert_allclose(wa.samples, wb.samples, atol=1e-4)


def test_seeking_reads_the_same_samples_as_streaming(tmp_path):
    path = audiogen.write(tmp_path / "seek.wav", audiogen.music(30.0, seed=4))
    with AudioFile(path, FE) as audio:
        streamed = list(audio.iter_windows())
    target = streamed[5]
    with AudioFile(path, FE) as audio:
        (sought,) = audio.read_windows_at([target.start])
    assert sought.start == pytest.approx(target.start, abs=1e-3)
    np.testing.assert_allclose(sought.samples, target.samples, atol=1e-3)


def test_seeking_in_compressed_audio_lands_near_the_target(long_mp3):
    with AudioFile(long_mp3, FE) as audio:
        windows = audio.read_windows_at([10.0, 40.0, 80.0])
    assert [round(w.start) for w in windows] == [10, 40, 80]
    assert all(len(w.samples) == FE.window_samples for w in windows)


def test_seek_past_the_end_yields_nothing(long_mp3):
    with AudioFile(long_mp3, FE) as audio:
        assert audio.read_windows_at([500.0]) == []
