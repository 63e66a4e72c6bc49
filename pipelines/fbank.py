"""Kaldi's log mel filterbank ("fbank"), as the Audio Spectrogram Transformer (AST) computes its input.

AST (YuanGongND/ast) feeds its model `torchaudio.compliance.kaldi.fbank(wave - wave.mean(),
htk_compat=True, sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128,
dither=0.0, frame_shift=10)`. This is that computation in numpy, parameter by parameter
(shards.format.schema.FbankParams), so the pipeline needs neither torch nor torchaudio:

  1. the waveform's mean subtracted (AST's loader, not Kaldi);
  2. frames of 400 samples every 160 (25 / 10 ms), Kaldi's snip_edges: frame j = samples
     [160 j, 160 j + 400), so 1 + (n - 400) // 160 frames;
  3. per frame: its mean removed (remove_dc_offset), pre-emphasis x[i] - 0.97 x[i-1] (x[-1] = x[0]),
     the window (Kaldi's "hanning", 0.5 - 0.5 cos(2 pi i / 399): symmetric), zero-padded to 512;
  4. power spectrum, Kaldi's mel banks (mel = 1127 ln(1 + f / 700), triangles in the mel domain from
     20 Hz to Nyquist, unnormalised; the Nyquist bin weighs nothing), log(max(energy, float32 eps)).

`kaldi_fbank` returns exactly Kaldi's frames (what AST sees; the golden test compares it with
torchaudio's). `fbank` is what ingest stores: the toolkit's timeline wants round(100 d) rows for a clip
of d seconds, and Kaldi's snip_edges stops at the last whole frame, 2-3 rows short. Row j of both starts
at sample 160 j (time j/100 s: the timeline's row j), and `fbank` continues Kaldi's framing past the
last whole frame over zero samples (the mean-subtracted waveform's silence), as log_mel's centred
frames read zeros past the clip's end. Its first 1 + (n - 400) // 160 rows are kaldi_fbank's exactly,
so a model trained on AST's features sees them unchanged. (Kaldi's frames are not centred: row j covers
[j/100, j/100 + 25 ms), its centre 12.5 ms after log_mel's row j; centring them, as snip_edges=False
would, shifts every frame by 80 samples and no longer gives AST's numbers.)
"""

from __future__ import annotations

import functools

import numpy as np

from pipelines.logmel import num_rows
from shards.format.schema import FbankParams

__all__ = ["fbank", "kaldi_fbank", "kaldi_num_frames", "mel_banks", "pad_or_cut"]


def kaldi_num_frames(num_samples: int, params: FbankParams = FbankParams()) -> int:
    """Frames Kaldi gives with snip_edges: 1 + (n - win_length) // hop_length, 0 for a shorter signal."""
    if num_samples < params.win_length:
        return 0
    return 1 + (num_samples - params.win_length) // params.hop_length


def _mel(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def mel_banks(params: FbankParams = FbankParams()) -> np.ndarray:
    """Kaldi's triangular mel filters: float64 [num_mel_bins, n_fft // 2 + 1] (the last, Nyquist, column
    zero, as torchaudio pads it)."""
    if params.mel_scale != "kaldi":
        raise ValueError(f"mel_scale must be 'kaldi', got {params.mel_scale!r}")
    nyquist = params.sample_rate / 2
    high = params.fmax if params.fmax > 0 else nyquist + params.fmax  # Kaldi: <= 0 counts from Nyquist
    if not 0 <= params.fmin < high <= nyquist:
        raise ValueError(f"fbank: need 0 <= fmin ({params.fmin}) < fmax ({high}) <= Nyquist ({nyquist})")
    lo, hi = _mel(params.fmin), _mel(high)
    delta = (hi - lo) / (params.num_mel_bins + 1)
    left = lo + delta * np.arange(params.num_mel_bins)[:, None]
    centre, right = left + delta, left + 2 * delta
    mel = _mel(params.sample_rate / params.n_fft * np.arange(params.n_fft // 2))[None, :]
    up, down = (mel - left) / (centre - left), (right - mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1)))


@functools.lru_cache(maxsize=8)
def _window(params: FbankParams) -> np.ndarray:
    n = np.arange(params.win_length, dtype=np.float64)
    a = 2 * np.pi / (params.win_length - 1)
    if params.window == "hanning":
        return 0.5 - 0.5 * np.cos(a * n)
    if params.window == "povey":  # Kaldi's default: Hann to the power 0.85
        return (0.5 - 0.5 * np.cos(a * n)) ** 0.85
    if params.window == "hamming":
        return 0.54 - 0.46 * np.cos(a * n)
    raise ValueError(f"fbank window must be hanning, povey or hamming, got {params.window!r}")


def _check(params: FbankParams) -> None:
    if params.dither != 0:
        raise ValueError("fbank: dither must be 0 (features are a function of the audio)")
    if params.n_fft < params.win_length:
        raise ValueError(f"fbank: n_fft ({params.n_fft}) must be >= win_length ({params.win_length})")
    if params.tail != "zero_samples":
        raise ValueError(f"fbank: tail must be 'zero_samples', got {params.tail!r}")


def _frames_fbank(signal: np.ndarray, rows: int, params: FbankParams) -> np.ndarray:
    """float32 [rows, num_mel_bins]: Kaldi's fbank of frames [hop j, hop j + win) of `signal` (float64,
    long enough for `rows` frames)."""
    import scipy.fft  # numpy's pocketfft is slower

    if rows == 0:
        return np.zeros((0, params.num_mel_bins), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(signal, params.win_length)[::params.hop_length][:rows]
    if params.remove_dc_offset:
        frames = frames - frames.mean(axis=1, keepdims=True)
    if params.preemphasis:
        previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # x[-1] = x[0] (replicate)
        frames = frames - params.preemphasis * previous
    spec = scipy.fft.rfft(frames * _window(params), n=params.n_fft, axis=1, workers=1)
    power = spec.real * spec.real + spec.imag * spec.imag
    if params.power != 2.0:
        power = power ** (params.power / 2)
    energy = power @ mel_banks(params).T
    return np.log(np.maximum(energy, params.log_floor)).astype(np.float32)


def _signal(audio: np.ndarray, params: FbankParams) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)  # what AST's loader holds: float32 samples
    if audio.ndim != 1:
        raise ValueError(f"fbank wants mono audio [samples], got shape {audio.shape}")
    signal = audio.astype(np.float64)
    if params.subtract_mean and signal.size:
        signal = signal - np.float64(audio.mean(dtype=np.float32))  # torch's float32 mean, as AST's
    return signal


def kaldi_fbank(audio: np.ndarray, params: FbankParams = FbankParams()) -> np.ndarray:
    """Kaldi's fbank exactly (AST's input before padding and normalisation): float32
    [1 + (n - 400) // 160, num_mel_bins], row j over samples [160 j, 160 j + 400). `audio`: mono at
    params.sample_rate."""
    _check(params)
    signal = _signal(audio, params)
    return _frames_fbank(signal, kaldi_num_frames(signal.size, params), params)


def fbank(audio: np.ndarray, params: FbankParams = FbankParams()) -> np.ndarray:
    """The stored spectrogram of kind kaldi_fbank: float32 [round(n / 160), num_mel_bins], Kaldi's
    frames (kaldi_fbank's rows, unchanged) continued over zero samples past the audio's end, so a clip
    of d seconds has round(100 d) rows like log_mel's (the module docstring says why)."""
    _check(params)
    signal = _signal(audio, params)
    rows = num_rows(signal.size, params.hop_length)
    need = (rows - 1) * params.hop_length + params.win_length if rows else 0
    return _frames_fbank(np.pad(signal, (0, max(0, need - signal.size))), rows, params)


def pad_or_cut(spec: np.ndarray, rows: int, value: float = 0.0) -> np.ndarray:
    """`spec` [T, F] cut to its first `rows` rows, or padded with `value` to them (AST pads its fbank
    with 0 to target_length, e.g. 1024 frames for AudioSet, before normalising)."""
    spec = np.asarray(spec)
    if len(spec) >= rows:
        return spec[:rows]
    return np.concatenate([spec, np.full((rows - len(spec), *spec.shape[1:]), value, spec.dtype)])
