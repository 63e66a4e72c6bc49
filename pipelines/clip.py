"""One manifest row -> one Sample: decode with ffmpeg, compute the spectrogram (log-mel or Kaldi fbank),
attach labels and meta."""

from __future__ import annotations

import numpy as np

from pipelines.config import IngestConfig
from pipelines.decode import DecodedClip, decode_clip
from pipelines.fbank import fbank
from pipelines.ffmpeg_run import DecodeError
from pipelines.logmel import log_mel
from pipelines.manifests import ClipSpec
from shards.format.schema import FbankParams, MelParams, Sample

__all__ = ["DecodeError", "build_sample", "decode", "sample_of", "spectrogram"]


def build_sample(spec: ClipSpec, label_ids: list[int], cfg: IngestConfig, local: str | None = None) -> Sample:
    """Decode `spec`'s clip and build its Sample; raises DecodeError with a reason slug on bad input.
    `local` is a local copy of `spec.path` already fetched (errors still name `spec.path`)."""
    try:
        clip = decode(local or spec.path, spec.start, spec.end, cfg)
    except DecodeError as e:
        if local:
            raise DecodeError(e.reason, e.detail.replace(local, spec.path)) from None
        raise
    return sample_of(spec, label_ids, cfg, clip)


def decode(path: str, start: float, end: float | None, cfg: IngestConfig) -> DecodedClip:
    """decode_clip with the job's settings and limits."""
    return decode_clip(path, start, end, short_side=cfg.short_side, jpeg_quality=cfg.jpeg_quality,
                       max_seconds=cfg.max_seconds, max_pixels=cfg.max_pixels, timeout=cfg.timeout,
                       min_seconds=cfg.min_seconds)


def spectrogram(audio: np.ndarray, params: MelParams | FbankParams) -> np.ndarray:
    """The stored spectrogram of a clip's audio, float32 [round(100 d), 128]: the kind `params` are of
    (MelParams: pipelines.logmel.log_mel; FbankParams: AST's Kaldi fbank, pipelines.fbank.fbank)."""
    if isinstance(params, FbankParams):
        return fbank(audio, params)
    return log_mel(audio, params)


def sample_of(spec: ClipSpec, label_ids: list[int], cfg: IngestConfig, clip: DecodedClip) -> Sample:
    """The Sample of `spec` from its decoded clip: spectrogram (cfg.features), labels, meta."""
    melspec = spectrogram(clip.audio, cfg.mel)
    meta = {"source": spec.path, "video_id": spec.video_id, "row": spec.row, **clip.meta(),
            "feature_kind": cfg.features, "mel": cfg.mel.to_dict()}
    return Sample(key=spec.key, frames=clip.frames, melspec=melspec, labels=list(label_ids),
                  label_text=list(spec.labels), meta=meta, verb=spec.verb, noun=spec.noun).validate()

