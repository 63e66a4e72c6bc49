"""pipelines.logmel: 100 rows per second, librosa-equivalent values, a tone lands in its mel bin."""

import numpy as np
import pytest

from pipelines.ffmpeg_run import run_ffmpeg
from pipelines.logmel import log_mel, mel_filterbank, num_rows, warm_up
from shards.format.schema import MelParams

P = MelParams()


def test_exactly_100_rows_per_second():
    for seconds in [0.01, 0.5, 1.0, 2.37, 10.0]:
        n = int(round(16000 * seconds))
        mel = log_mel(np.zeros(n, np.float32), P)
        assert mel.shape == (round(100 * seconds), 128)
        assert mel.dtype == np.float32 and mel.flags["C_CONTIGUOUS"]
    # any length: round(len / 160), halves up
    for n in [1, 79, 80, 159, 160, 161, 239, 240, 16001]:
        assert log_mel(np.zeros(n, np.float32), P).shape[0] == num_rows(n) == int(n / 160 + 0.5)
    assert log_mel(np.zeros(0, np.float32), P).shape == (0, 128)


def test_silence_is_log_offset():
    mel = log_mel(np.zeros(1600, np.float32), P)
    np.testing.assert_allclose(mel, np.log(np.float32(1e-6)), rtol=1e-6)


@pytest.mark.slow  # librosa.feature.melspectrogram JIT-compiles numba code on a cold cache
def test_matches_librosa_melspectrogram():
    import librosa

    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000 + 37) / 16000  # not a whole number of hops
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = log_mel(audio, P)
    ref = librosa.feature.melspectrogram(
        y=audio, sr=P.sample_rate, n_fft=P.n_fft, hop_length=P.hop_length, win_length=P.win_length,
        window=P.window, center=True, pad_mode="constant", power=P.power, n_mels=P.num_mel_bins,
        fmin=P.fmin, fmax=P.fmax, htk=False, norm="slaney")
    ref = np.log(ref.T + P.log_offset)  # librosa gives one more centred frame at the very end
    assert ref.shape[0] == ours.shape[0] + 1
    np.testing.assert_allclose(ours, ref[: ours.shape[0]], atol=2e-4)


def test_row_j_is_centred_on_j_hundredths():
    audio = np.zeros(16000, np.float32)
    audio[16000 * 37 // 100] = 1.0  # a click at 0.37 s
    energy = log_mel(audio, P).sum(axis=1)
    assert int(np.argmax(energy)) == 37


def test_ffmpeg_sine_peaks_in_the_1khz_bin():
    run = run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=16000:duration=1",
                      "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"], timeout=60)
    assert run.returncode == 0, run.stderr
    audio = np.frombuffer(run.stdout, "<f4")
    mel = log_mel(audio, P)
    assert mel.shape == (100, 128)
    peak = int(np.bincount(mel.argmax(axis=1)).argmax())
    # the bin whose triangle weighs 1 kHz most is where the energy is
    fft_bin = round(1000 * P.n_fft / P.sample_rate)
    assert peak == int(mel_filterbank(P)[:, fft_bin].argmax())
    assert (mel.argmax(axis=1)[2:-2] == peak).all()


def test_tone_through_decode_clip(tmp_path):
    # 44.1 kHz stereo tone in a video file -> decode_clip (resample + downmix) -> the same mel bin
    from pipelines.decode import decode_clip

    src = tmp_path / "tone.mp4"
    run = run_ffmpeg(["-f", "lavfi", "-i", "color=c=gray:s=64x48:r=25:d=1.5", "-f", "lavfi", "-i",
                      "sine=frequency=1000:sample_rate=44100:duration=1.5", "-ac", "2",
                      "-c:a", "aac", "-y", str(src)], timeout=60)
    assert run.returncode == 0, run.stderr
    clip = decode_clip(src, 0.2, 1.2)
    mel = log_mel(clip.audio, P)
    assert mel.shape == (clip.num_mel_rows, 128) == (100, 128)
    fft_bin = round(1000 * P.n_fft / P.sample_rate)
    assert (mel.argmax(axis=1)[5:-5] == int(mel_filterbank(P)[:, fft_bin].argmax())).all()


def test_rejects_multichannel_audio():
    with pytest.raises(ValueError):
        log_mel(np.zeros((2, 1600), np.float32), P)


def test_warm_up_builds_what_the_first_clip_needs():
    from pipelines.logmel import _sparse_filterbank, _window

    _sparse_filterbank.cache_clear()
    _window.cache_clear()
    warm_up(P)
    built = _sparse_filterbank.cache_info().misses + _window.cache_info().misses
    assert built >= 1
    log_mel(np.zeros(1600, np.float32), P)  # the first clip builds nothing more
    assert _sparse_filterbank.cache_info().misses + _window.cache_info().misses == built
