"""Augmentation and normalisation of sampled clips: crop, flip, colour jitter, SpecAugment.

Every random choice of an example comes from (seed, what it is for, epoch, key, window) — see
`shards.input.order.rng` — so an example is augmented the same way whichever worker, host or encoding
produced it, and switching one augmentation off leaves the others' draws unchanged. One crop box,
flip and colour transform per clip (all its frames alike), as video models expect.

Speed matters here (the input must keep up with an accelerator, and `mbt bench input` holds it to
the cost of decoding the JPEGs): only the crop box of each sampled frame is decoded, into one
reused scratch buffer, and resized by OpenCV straight into the clip's output while it is still in
the cache, so no full-size frame array is ever made; flips happen in place, the colour jitter is one
3x4 colour matrix (cv2.transform, uint8), and each frame is written once, into its batch slot
(normalised to float32 there while still in the cache, unless the batch ships uint8).
"""

from __future__ import annotations

import functools
import math
import types
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from shards.format import jpeg
from shards.format.errors import ShardError
from shards.input import order, sampling

if TYPE_CHECKING:
    from shards.input.config import InputConfig

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's and TF's grayscale
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _example_rng(seed: int, purpose: int, ex: dict) -> np.random.Generator:
    return order.rng(seed, purpose, ex.get("epoch", 0), order.key_hash(ex["__key__"]), ex.get("window", 0))


# ------------------------------------------------------------------------------------------- video

def crop_box(height: int, width: int, *, cfg: "InputConfig",
             rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the region resized to crop_size: random (training, `rng` given) or centred."""
    short = min(height, width)
    if rng is None:  # evaluation: the centred square, as "resize to crop/fraction, centre crop"
        side = max(1, min(short, round(short * cfg.eval_crop_fraction)))
        return (height - side) // 2, (width - side) // 2, side, side
    if cfg.crop == "scale_jitter":  # a square of a random fraction of the short side
        side = max(1, min(short, round(short * rng.uniform(*cfg.jitter_side))))
        return order.below(rng, height - side + 1), order.below(rng, width - side + 1), side, side
    # random resized crop (Inception / torchvision RandomResizedCrop): area and aspect ratio
    log_ratio = np.log(cfg.crop_aspect)
    for _ in range(10):
        area = height * width * rng.uniform(*cfg.crop_area)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return order.below(rng, height - h + 1), order.below(rng, width - w + 1), h, w
    ratio = width / height  # fallback: the whole frame, clamped to the aspect range
    if ratio < min(cfg.crop_aspect):
        w, h = width, round(width / min(cfg.crop_aspect))
    elif ratio > max(cfg.crop_aspect):
        w, h = round(height * max(cfg.crop_aspect)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_into(src: np.ndarray, out: np.ndarray, *, flip: bool = False, antialias: bool = False) -> np.ndarray:
    """uint8 [h, w, 3] resized (bilinear) into uint8 `out` [S, S, 3], mirrored if `flip`.

    antialias=False is tf.image.resize's default, which DMVR/scenic video inputs use: a crop box is
    rarely more than 1.2x the output, where aliasing is mild. antialias=True averages over the
    source pixels when shrinking (OpenCV's area interpolation; slower)."""
    import cv2

    size = out.shape[1], out.shape[0]
    if src.shape[1::-1] == size:  # (a centre crop of a frame already at scale needs no resampling)
        out[...] = src
    else:
        shrink = antialias and (src.shape[1] > size[0] or src.shape[0] > size[1])
        written = cv2.resize(src, size, dst=out, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if written is not out:  # (OpenCV allocates when dst does not fit: never here)
            out[...] = written
    if flip:
        cv2.flip(out, 1, dst=out)
    return out


def hue_matrix(turns: float) -> np.ndarray:
    """RGB -> RGB rotation of hue by `turns` (a fraction of a full turn) about the grey axis (YIQ)."""
    c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return np.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ


def colour_matrix(rng: np.random.Generator, cfg: "InputConfig", mean_rgb: np.ndarray) -> np.ndarray:
    """The clip's colour jitter as one affine map [3, 4] (RGB 0..255 in, out = M @ rgb + offset).

    With probability colour_prob: brightness, contrast (about the clip's mean luminance), saturation
    and hue, each drawn from its range, composed in a random order (as torchvision's ColorJitter);
    then grayscale with probability grayscale_prob. The draws are the same whichever apply.
    """
    b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    h = rng.uniform(-cfg.hue, cfg.hue)
    steps, jitter, gray = rng.permutation(4), rng.random() < cfg.colour_prob, rng.random() < cfg.grayscale_prob
    to_gray = np.outer(np.ones(3), LUMA)
    m, o = np.eye(3), np.zeros(3)
    for step in steps if jitter else ():
        if step == 0:
            m, o = b * m, b * o
        elif step == 1:
            pivot = LUMA @ (m @ mean_rgb + o)  # mean luminance of the image at this point
            m, o = c * m, c * o + (1 - c) * pivot
        elif step == 2:
            sat = s * np.eye(3) + (1 - s) * to_gray
            m, o = sat @ m, sat @ o
        else:
            rot = hue_matrix(h)
            m, o = rot @ m, rot @ o
    if gray:
        m, o = to_gray @ m, to_gray @ o
    return np.concatenate([m, o[:, None]], axis=1)


def apply_colour(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] through the affine colour map, in place (rounded, saturated to 0..255)."""
    import cv2

    frames = rgb.reshape(-1, rgb.shape[-2], 3)
    written = cv2.transform(frames, np.asarray(matrix, np.float64), dst=frames)
    if not np.may_share_memory(written, frames):  # (OpenCV wrote elsewhere: never here)
        frames[...] = written
    return rgb


def augment_video(samples: Iterable[dict], *, cfg: "InputConfig", training: bool, seed: int = 0,
                  on_error: sampling.OnError = sampling.raise_error,
                  slot: Callable[[], np.ndarray] | None = None,
                  bounds: jpeg.FrameBounds = jpeg.FrameBounds()) -> Iterator[dict]:
    """Stage: `jpegs` (one per sampled frame) -> `rgb` [F, crop_size, crop_size, 3].

    Training: random box (random resized crop or scale jitter), flip, colour jitter, each as the
    config switches them; evaluation: the centred box only. Only the box of each distinct frame is
    decoded (see shards.format.jpeg.decode_jpeg), once (a padded window repeats its last frame); a JPEG
    that does not decode, frames of different sizes, or a header claiming a frame beyond `bounds` (the
    dataset's frame size: checked before the scratch buffer grows to it) go to on_error as "bad_jpeg".

    `slot()` gives the array each example's frames are written into (its slot in the batch being
    made, see shards.input.batching.Batcher): uint8 pixels, or float32 normalised frame by frame while
    the frame is in the cache (as cfg.rgb_normalization says: see normalize_rgb). Without it, a new
    uint8 array per example.
    """
    import cv2

    cv2.setNumThreads(1)  # one loader stream = one core; OpenCV's thread pool would only add overhead
    scratch = np.empty(0, np.uint8)  # the decoded box of one frame at a time, reused
    pixels = np.empty((cfg.crop_size, cfg.crop_size, 3), np.uint8)  # one resized frame, before float32
    for ex in samples:
        jpegs = ex.pop("jpegs")
        rng = _example_rng(seed, order.CROP, ex) if training else None
        flip = training and cfg.flip and _example_rng(seed, order.FLIP, ex).random() < 0.5
        rgb = slot() if slot else np.empty((len(jpegs), cfg.crop_size, cfg.crop_size, 3), np.uint8)
        done: dict[int, int] = {}  # frame index -> its place in rgb
        colour = None
        try:
            shape = _jpeg_size(ex, ex["frame_indices"][0], jpegs[0], bounds)
            box = crop_box(*shape, cfg=cfg, rng=rng)
            if scratch.size < shape[0] * shape[1] * 3:
                scratch = np.empty(shape[0] * shape[1] * 3, np.uint8)
            for i, (j, data) in enumerate(zip(ex["frame_indices"], jpegs)):
                if j in done:
                    rgb[i] = rgb[done[j]]
                    continue
                frame = pixels if rgb.dtype != np.uint8 else rgb[i]
                resize_into(_decode(ex, j, data, scratch, box, shape), frame, flip=flip, antialias=cfg.antialias)
                if training and cfg.colour_jitter:
                    if colour is None:  # one transform per clip, about its first frame's mean colour
                        mean_rgb = frame[::4, ::4].reshape(-1, 3).mean(axis=0)
                        colour = colour_matrix(_example_rng(seed, order.COLOUR, ex), cfg, mean_rgb)
                    apply_colour(frame, colour)
                if frame is pixels:
                    normalize_rgb(pixels, out=rgb[i], normalization=cfg.rgb_normalization)
                done[j] = i
        except ShardError as e:
            on_error("bad_jpeg", ex, e)
            continue
        ex["rgb"] = rgb
        yield ex


def _jpeg_size(ex: dict, j: int, data: bytes, bounds: jpeg.FrameBounds) -> tuple[int, int]:
    try:
        return bounds.check(jpeg.jpeg_size(data))
    except Exception as e:
        raise _not_a_jpeg(ex, j, e) from None


def _decode(ex: dict, j: int, data: bytes, scratch: np.ndarray, box: tuple, shape: tuple) -> np.ndarray:
    try:
        return jpeg.decode_jpeg(data, out=scratch, region=box, frame_size=shape)
    except Exception as e:  # simplejpeg raises ValueError, Pillow OSError, SyntaxError, ...
        raise _not_a_jpeg(ex, j, e) from None


def _not_a_jpeg(ex: dict, j: int, e: Exception) -> ShardError:
    where = f"shard {ex['__shard__']}, sample {ex['__key__']}: frame {j}"
    if isinstance(e, jpeg.FrameSizeError):
        return ShardError(f"{where}: {e}; the shard is damaged - re-create it (mbt ingest)")
    return ShardError(f"{where} is not a decodable JPEG ({type(e).__name__}: {e})")


def normalize_rgb(rgb: np.ndarray, out: np.ndarray | None = None, *,
                  normalization: str = "imagenet") -> np.ndarray:
    """uint8 [..., W, 3] -> float32, as InputConfig.rgb_normalization says: "imagenet" (x/255 -
    ImageNet mean) / std, "unit" x/255, "symmetric" x/127.5 - 1 (in [-1, 1], scenic's).

    Written into `out` (e.g. a slot of the batch) when given. The per-channel constants are tiled
    along a whole row, so numpy's inner loop runs over W*3 values, not 3 (10x faster).
    """
    out = np.empty(rgb.shape, np.float32) if out is None else out
    width = rgb.shape[-2]
    scale, offset = _tiled_affine(width, normalization)
    src, dst = rgb.reshape(-1, width * 3), out.reshape(-1, width * 3)
    np.multiply(src, scale, out=dst)
    np.add(dst, offset, out=dst)
    return out


def rgb_affine(normalization: str = "imagenet") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 (scale, offset): normalised = pixel * scale + offset (see normalize_rgb);
    the one definition of the RGB normalisations, on the host and on the device (mbt.input)."""
    if normalization == "imagenet":
        return (1 / (255 * IMAGENET_STD)).astype(np.float32), (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
    if normalization == "unit":
        return np.full(3, 1 / 255, np.float32), np.zeros(3, np.float32)
    if normalization == "symmetric":
        return np.full(3, 1 / 127.5, np.float32), np.full(3, -1.0, np.float32)
    raise ValueError(f"rgb normalization {normalization!r}: use imagenet, unit or symmetric")


@functools.lru_cache(maxsize=8)
def _tiled_affine(width: int, normalization: str) -> tuple[np.ndarray, np.ndarray]:
    tiled = tuple(np.tile(x, width) for x in rgb_affine(normalization))
    for x in tiled:
        x.setflags(write=False)
    return tiled


# ------------------------------------------------------------------------------------------- audio

def spec_augment(spec: np.ndarray, rng: np.random.Generator, *, time_masks: int, time_mask_max: int,
                 freq_masks: int, freq_mask_max: int, value: float = 0.0) -> np.ndarray:
    """SpecAugment's masks, in place on [T, F]: each mask is a random width in 0..max at a random start."""
    # all the doubles in one call (the same numbers as drawn one by one), handed out one at a time
    drawn = types.SimpleNamespace(random=iter(rng.random(2 * (time_masks + freq_masks)).tolist()).__next__)
    for count, most, axis in ((time_masks, time_mask_max, 0), (freq_masks, freq_mask_max, 1)):
        size = spec.shape[axis]
        for _ in range(count):
            width = order.below(drawn, min(most, size) + 1)
            start = order.below(drawn, size - width + 1)
            if axis == 0:
                spec[start:start + width] = value
            else:
                spec[:, start:start + width] = value
    return spec


def augment_audio(samples: Iterable[dict], *, cfg: "InputConfig", training: bool, seed: int = 0,
                  mel_mean: float | np.ndarray = 0.0, mel_std: float | np.ndarray = 1.0,
                  slot: Callable[[], np.ndarray] | None = None) -> Iterator[dict]:
    """Stage: `spectrogram` log-mel float32 [T, 128] -> normalised by the split's mel statistics, then
    (training) SpecAugment masks, which cover with 0: the mean.

    Written into `slot()` (the example's place in the batch being made, see shards.input.batching.Batcher)
    when given, else in place (the window is the example's own copy, shards.input.sampling.cut_spectrogram).
    """
    for ex in samples:
        spec = ex["spectrogram"]
        out = slot() if slot else spec
        if cfg.normalize_spectrogram:
            np.subtract(spec, mel_mean, out=out)
            np.divide(out, mel_std, out=out)
        elif out is not spec:
            out[...] = spec
        if training and cfg.spec_augment:
            spec_augment(out, _example_rng(seed, order.SPEC, ex), time_masks=cfg.time_masks,
                         time_mask_max=cfg.time_mask_max, freq_masks=cfg.freq_masks,
                         freq_mask_max=cfg.freq_mask_max)
        ex["spectrogram"] = out
        yield ex
