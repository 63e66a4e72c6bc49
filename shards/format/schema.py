"""The sample: one clip of a labelled video, as every encoding and reader sees it.

A sample is the unit the whole toolkit passes around: the ingestion job produces them, the two shard
encodings (WebDataset tar, DMVR-style TFRecord) store them, the readers give them back unchanged, and
the training input samples frames and spectrogram windows out of them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from shards.format.errors import UserError

FPS = 25  # frames per second of every stored clip
MEL_ROWS_PER_SECOND = 100  # 10 ms hop
NUM_MEL_BINS = 128

# webdataset splits a member name at its first dot, and keys travel in file names: no dots, no slashes.
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class SchemaError(UserError, ValueError):
    """A sample (or a key) does not follow the schema; the message says which field and why."""


def check_key(key: str) -> str:
    """Return `key` if it is a valid sample key, else raise SchemaError naming it."""
    # No leading '-': keys become file names in tar shards, and '-x.json' reads as an option to tools.
    if not isinstance(key, str) or not _KEY_RE.match(key) or len(key) > 200 or key.startswith("-"):
        raise SchemaError(
            f"invalid sample key {key!r}: use 1-200 characters of [A-Za-z0-9_-] (no dots, no slashes), "
            f"not starting with '-'"
        )
    return key


def make_key(video_id: str, start_seconds: float) -> str:
    """`<video_id>_<start_ms>`, with characters outside [A-Za-z0-9_-] replaced by '-' and a leading '-'
    (common in YouTube ids) prefixed with '_'; stable across runs."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", video_id) or "video"
    safe = "_" + safe if safe.startswith("-") else safe
    return check_key(f"{safe[:180]}_{int(round(start_seconds * 1000))}")


@dataclasses.dataclass(frozen=True)
class MelParams:
    """Log-mel parameters (feature kind "log_mel", pipelines.logmel); stored in every sample's meta and
    the dataset index so readers can recompute."""

    sample_rate: int = 16000
    num_mel_bins: int = NUM_MEL_BINS
    window: str = "hamming"
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz -> 100 rows per second
    n_fft: int = 400
    fmin: float = 0.0
    fmax: float = 8000.0
    power: float = 2.0
    log_offset: float = 1e-6  # melspec = log(mel_power + log_offset)
    mel_scale: str = "slaney"  # librosa's default filterbank (htk=False, norm='slaney')

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FbankParams:
    """Kaldi filterbank parameters (feature kind "kaldi_fbank", pipelines.fbank): the features AST was
    trained on, torchaudio.compliance.kaldi.fbank(wave - wave.mean(), htk_compat=True,
    use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10), with
    Kaldi's defaults written out. Stored like MelParams."""

    sample_rate: int = 16000
    num_mel_bins: int = NUM_MEL_BINS
    window: str = "hanning"  # Kaldi's: 0.5 - 0.5 cos(2 pi n / (N - 1)) (symmetric), or "povey", "hamming"
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz
    n_fft: int = 512  # the frame zero-padded to a power of two (Kaldi's round_to_power_of_two)
    fmin: float = 20.0  # Kaldi's low_freq
    fmax: float = 8000.0  # Kaldi's high_freq 0: Nyquist
    preemphasis: float = 0.97  # x[i] - 0.97 x[i-1] within each frame (x[-1] = x[0])
    remove_dc_offset: bool = True  # each frame's mean subtracted before pre-emphasis
    subtract_mean: bool = True  # the clip's waveform mean subtracted first (AST's data loader)
    dither: float = 0.0  # no random noise: the features are a function of the audio
    power: float = 2.0  # power spectrum
    mel_scale: str = "kaldi"  # 1127 ln(1 + f / 700); triangles in the mel domain, unnormalised
    log_floor: float = float(np.finfo(np.float32).eps)  # fbank = log(max(mel energy, log_floor))
    # Kaldi's frames (snip_edges): row j = samples [hop j, hop j + win_length), 1 + (n - 400) // 160 of
    # them; the clip's round(100 d) rows continue past the last whole frame over zero samples.
    tail: str = "zero_samples"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The spectrograms the toolkit computes: the kind recorded in an index's and a sample's features -> its
# parameters. An index without "kind" was written before kaldi_fbank existed: log_mel.
FEATURE_KINDS: dict[str, type] = {"log_mel": MelParams, "kaldi_fbank": FbankParams}
DEFAULT_FEATURE_KIND = "log_mel"


def feature_kind(features: dict[str, Any] | None) -> str:
    """The feature kind of an index's (or a run's data.json's) `features` dict; log_mel when unrecorded."""
    return (features or {}).get("kind") or DEFAULT_FEATURE_KIND


def spectrogram_params(kind: str = DEFAULT_FEATURE_KIND,
                       values: dict[str, Any] | None = None) -> "MelParams | FbankParams":
    """The parameters of feature `kind` from their recorded dict (`features["mel"]`, a sample's
    meta["mel"]), or its defaults; SchemaError for a kind or a parameter this version doesn't know."""
    if kind not in FEATURE_KINDS:
        raise SchemaError(f"feature kind {kind!r}: this version computes {', '.join(FEATURE_KINDS)}")
    try:
        return FEATURE_KINDS[kind](**(values or {}))
    except TypeError as e:
        raise SchemaError(f"{kind} parameters {values}: {e}") from None


def padding_value(kind: str = DEFAULT_FEATURE_KIND) -> float:
    """The value a training window pads a short clip's spectrogram with: log_mel's silence, log(0 +
    log_offset); 0 for kaldi_fbank, as AST's loader zero-pads its fbank to target_length."""
    return 0.0 if kind == "kaldi_fbank" else float(np.log(MelParams().log_offset))


def feature_params(kind: str = DEFAULT_FEATURE_KIND, *, short_side: int = 256, jpeg_quality: int = 3,
                   mel: "MelParams | FbankParams | None" = None) -> dict[str, Any]:
    """The canonical `features` record of a dataset (its index, a run's data.json): what a reader needs
    to interpret, and a predictor to recompute, the stored frames and spectrogram. `mel`: the
    spectrogram's parameters, of `kind`'s type (None: its defaults)."""
    params = spectrogram_params(kind) if mel is None else mel
    if type(params) is not FEATURE_KINDS[kind]:
        raise SchemaError(f"feature kind {kind!r} takes {FEATURE_KINDS[kind].__name__}, "
                          f"got {type(params).__name__}")
    return {"kind": kind, "fps": FPS, "short_side": short_side, "jpeg_quality": jpeg_quality,
            "audio_sample_rate": params.sample_rate, "mel": params.to_dict()}


@dataclasses.dataclass
class Sample:
    """One clip. Frames and spectrogram describe the same seconds: frame i at start + i/25 s,
    spectrogram row j at start + j/100 s."""

    key: str
    frames: list[bytes]  # one JPEG per frame, 25 fps, short side resized
    melspec: np.ndarray  # float32 [T, 128], time-major, T = 100 per second of clip (log-mel or fbank)
    labels: list[int]  # class indices into the dataset vocabulary (multi-label allowed)
    label_text: list[str]  # the class names of `labels`, same order
    meta: dict[str, Any]  # source, start, end, fps, num_frames, sample_rate, features (kind), mel, has_audio, ...
    verb: int | None = None  # EPIC-Kitchens verb class, when the corpus has one
    noun: int | None = None  # EPIC-Kitchens noun class, when the corpus has one

    def validate(self) -> "Sample":
        """Check field types and shapes; raise SchemaError naming the key and the field."""
        check_key(self.key)
        mel = self.melspec
        if not isinstance(mel, np.ndarray) or mel.dtype != np.float32 or mel.ndim != 2 \
                or mel.shape[1] != NUM_MEL_BINS:
            raise SchemaError(f"sample {self.key}: melspec must be float32 [T, {NUM_MEL_BINS}], "
                              f"got {getattr(mel, 'dtype', type(mel))} {getattr(mel, 'shape', '')}")
        if not all(isinstance(f, (bytes, bytearray)) and f[:2] == b"\xff\xd8" for f in self.frames):
            raise SchemaError(f"sample {self.key}: every frame must be JPEG bytes (starting FF D8)")
        if len(self.labels) != len(self.label_text):
            raise SchemaError(f"sample {self.key}: labels and label_text differ in length")
        if not all(isinstance(i, int) and i >= 0 for i in self.labels):
            raise SchemaError(f"sample {self.key}: labels must be non-negative ints, got {self.labels}")
        return self

    @property
    def duration(self) -> float:
        """Seconds of clip, from the frame count (exactly round(25 * d) frames)."""
        return len(self.frames) / FPS

    def equals(self, other: "Sample") -> bool:
        """Field-by-field equality (numpy-aware), for round-trip checks."""
        return (self.key == other.key and self.frames == other.frames
                and self.melspec.shape == other.melspec.shape
                and np.array_equal(self.melspec, other.melspec)
                and self.labels == other.labels and self.label_text == other.label_text
                and self.meta == other.meta and self.verb == other.verb and self.noun == other.noun)
