"""Pay one-time costs once, at install: numba compiles (and caches) librosa's kernels on first use.

`make setup` runs `python -m pipelines.warmup`, so that neither the first Beam worker nor the first
test pays ~14 s of compilation. It also checks that an ffmpeg binary is found.
"""

from __future__ import annotations

import time

import numpy as np


def warm_up() -> dict[str, float]:
    t0 = time.time()
    import librosa

    from pipelines.ffmpeg_run import ffmpeg_exe
    from pipelines.logmel import log_mel
    from shards.format.schema import MelParams

    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    p = MelParams()
    log_mel(audio, p)
    librosa.feature.melspectrogram(y=audio, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length,
                                   win_length=p.win_length, window=p.window, n_mels=p.num_mel_bins)
    return {"seconds": round(time.time() - t0, 1), "ffmpeg": ffmpeg_exe()}


if __name__ == "__main__":
    print(f"warm-up: {warm_up()}")
