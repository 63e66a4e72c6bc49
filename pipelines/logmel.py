"""128-bin log-mel spectrogram of 16 kHz mono audio: exactly 100 rows per second, time-major.

Framing (the contract readers rely on): row j is the 400-sample Hamming-windowed frame centred on
sample 160 j (i.e. on time j/100 s), the signal zero-padded by 200 samples at both ends (librosa's
center=True, pad_mode='constant'); T = round(len(audio) / 160) rows (halves up), which drops the
one extra centred frame at the very end that librosa would add. So a clip of d seconds (round(16000 d)
samples) gets round(100 d) rows, and row j describes the same instant as frame j/4 at 25 fps.

Values: log(mel_power + 1e-6) with librosa's filterbank (librosa.filters.mel; Slaney mel scale and
area normalisation by default), |STFT|^2 of a periodic Hamming window, n_fft 400. Every parameter
comes from shards.format.schema.MelParams, which is stored in each sample's meta and the dataset index.

The STFT is our own strided framing + scipy.fft.rfft in float32 rather than librosa.stft, whose first
call JIT-compiles numba code (tens of seconds on a busy 2-core machine); here the only first-call
cost is importing librosa and building the filterbank once per process (warm_up() does it early).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from shards.format.schema import MelParams

__all__ = ["log_mel", "num_rows", "mel_filterbank", "warm_up"]


def num_rows(num_samples: int, hop_length: int = 160) -> int:
    """Rows log_mel gives for `num_samples` samples: round(num_samples / hop_length), halves up."""
    return int(math.floor(num_samples / hop_length + 0.5))


@functools.lru_cache(maxsize=8)
def mel_filterbank(params: MelParams) -> np.ndarray:
    """librosa's mel filterbank for `params`: float32 [num_mel_bins, n_fft // 2 + 1]."""
    import librosa  # heavy (pulls in numba and scipy): only where a spectrogram is computed

    if params.mel_scale not in ("slaney", "htk"):
        raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {params.mel_scale!r}")
    return librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.num_mel_bins,
                               fmin=params.fmin, fmax=params.fmax, htk=params.mel_scale == "htk",
                               norm="slaney", dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _sparse_filterbank(params: MelParams):
    """The filterbank as a CSR matrix (~400 non-zeros of 25,728): a single-threaded sparse product is
    ~20x faster than a dense BLAS one, which also oversubscribes cores when every core runs a worker."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_filterbank(params))


@functools.lru_cache(maxsize=8)
def _window(params: MelParams) -> np.ndarray:
    """The analysis window (periodic, as librosa's), zero-padded to n_fft and centred."""
    import librosa

    win = librosa.filters.get_window(params.window, params.win_length, fftbins=True)
    return librosa.util.pad_center(win, size=params.n_fft).astype(np.float32)


def log_mel(audio: np.ndarray, params: MelParams = MelParams()) -> np.ndarray:
    """float32 [round(len(audio) / hop), num_mel_bins]: log(mel power + log_offset), row j centred on
    sample hop * j. `audio` is mono at params.sample_rate (float; any dtype is converted)."""
    import scipy.fft  # numpy's pocketfft is ~5x slower on float32 frames

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"log_mel wants mono audio [samples], got shape {audio.shape}")
    n_fft, hop = params.n_fft, params.hop_length
    rows = num_rows(audio.shape[0], hop)
    if rows == 0:
        return np.zeros((0, params.num_mel_bins), np.float32)
    padded = np.pad(audio, (n_fft // 2, n_fft // 2))  # zeros: librosa's center=True, 'constant'
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:rows]
    spec = scipy.fft.rfft(frames * _window(params), n=n_fft, axis=1, workers=1)  # complex64
    if params.power == 2.0:
        power = spec.real * spec.real + spec.imag * spec.imag  # [rows, n_fft // 2 + 1]
    else:
        power = np.abs(spec) ** params.power
    mel = np.ascontiguousarray((_sparse_filterbank(params) @ power.astype(np.float32, copy=False).T).T)
    return np.log(mel + np.float32(params.log_offset)).astype(np.float32, copy=False)


def warm_up(params: MelParams = MelParams()) -> None:
    """Import librosa and build the filterbank now, so the first clip of a job doesn't pay for it."""
    log_mel(np.zeros(params.sample_rate, np.float32), params)
