"""The training input's configuration (`InputConfig`) and the presets of the paper's datasets."""

from __future__ import annotations

import dataclasses

LABEL_KINDS = ("multi_hot", "class_index", "verb_noun")
# RGB pixels x in 0..255 -> "imagenet": (x/255 - ImageNet mean) / std; "unit": x/255; "symmetric":
# x/127.5 - 1, in [-1, 1] (scenic's MBT and ViT inputs). shards.input.augment.rgb_affine has the numbers.
RGB_NORMALIZATIONS = ("imagenet", "unit", "symmetric")
# AST's fixed spectrogram statistics (YuanGongND/ast, AudioSet): its input is (fbank + 4.2677393) /
# (4.5689974 * 2), i.e. InputConfig(mel_mean=AST_MEL_MEAN, mel_std=AST_MEL_STD) on kaldi_fbank features.
AST_MEL_MEAN = -4.2677393
AST_MEL_STD = 4.5689974 * 2


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Everything about the input but where it reads from. Defaults: MBT-B on AudioSet (see presets)."""

    batch_size: int = 64  # global batch size; each host makes batch_size / process_count of it
    format: str | None = None  # "webdataset" | "tfrecord"; None: the spec's (a folder: webdataset first)
    # temporal sampling (shards.input.sampling)
    num_frames: int = 8  # F frames per example
    clip_seconds: float = 8.0  # t: the frames spread over t s (stride 25t/F); spectrogram of 100t rows
    frame_stride: int | None = None  # F consecutive frames at this stride instead (EPIC: 32 at 1)
    async_spectrogram: bool = False  # draw the spectrogram window's start independently (MBT Fig. 2)
    test_windows: int = 1  # evaluation: N evenly spaced windows per clip (multi-clip test)
    # video augmentation (shards.input.augment); training only, except the centred eval crop
    crop_size: int = 224  # output frames are crop_size x crop_size
    crop: str = "scale_jitter"  # "scale_jitter" (square, as scenic's video configs) or "random_resized"
    crop_area: tuple[float, float] = (0.3, 1.0)  # random_resized: fraction of the frame's area
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)  # random_resized: width / height
    jitter_side: tuple[float, float] = (0.65, 1.0)  # scale_jitter: box side / short side (~ scale 0.9-1.33)
    eval_crop_fraction: float = 0.875  # eval: centred square of this fraction of the short side
    antialias: bool = False  # antialiased resize (slower); False is tf.image.resize's, as DMVR's
    flip: bool = True  # horizontal flip with probability 1/2
    colour_jitter: bool = False  # brightness, contrast, saturation, hue (one colour matrix per clip)
    brightness: float = 0.2  # factor in [1 - b, 1 + b]
    contrast: float = 0.2  # factor in [1 - c, 1 + c]
    saturation: float = 0.2  # factor in [1 - s, 1 + s]
    hue: float = 0.05  # rotation in [-h, h] turns
    colour_prob: float = 0.8  # probability a clip is colour-jittered at all
    grayscale_prob: float = 0.0  # probability a clip is turned grey
    # audio augmentation
    spec_augment: bool = True  # SpecAugment time and frequency masks
    time_masks: int = 1
    time_mask_max: int = 192  # rows (10 ms each)
    freq_masks: int = 1
    freq_mask_max: int = 48  # mel bins
    # normalisation
    rgb_normalization: str = "imagenet"  # one of RGB_NORMALIZATIONS: imagenet | unit (x/255) | symmetric ([-1, 1])
    rgb_uint8: bool = False  # ship raw uint8 pixels (4x less memory, transport, CPU); mbt.input normalises
    #                          them on the device, as rgb_normalization says (the training presets do)
    normalize_spectrogram: bool = True  # (x - mel_mean) / mel_std
    mel_mean: float | None = None  # fixed; None: the split's, from the index (AST: AST_MEL_MEAN, scenic: 1.102)
    mel_std: float | None = None  # fixed; None: the split's (AST: AST_MEL_STD, scenic: 2.762); each on its own
    mel_per_bin: bool = False  # use the index's per-bin mean/std instead of the global ones
    # labels
    labels: str = "multi_hot"  # "multi_hot" [B,C] f32 | "class_index" [B] i32 | "verb_noun" (EPIC)
    num_classes: int | None = None  # None: the index's vocabulary size
    # order and workers
    shuffle_buffer: int = 256  # examples per stream's shuffle buffer (training; ~0.7 MB each at defaults)
    epochs: int | None = None  # None: endless when training, 1 for evaluation
    num_workers: int = 0  # loader streams per host; 0: one stream in this process
    worker_processes: bool = True  # False: run the num_workers streams in this process (same batches)
    prefetch: int = 2  # batches each worker prepares ahead
    start_method: str | None = None  # workers' multiprocessing start method (None: forkserver; shards.input.workers)
    on_error: str | None = None  # "skip" (count + warn) or "raise"; None: skip training, raise eval

    def __post_init__(self):
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.format in (None, "webdataset", "tfrecord"), "format must be webdataset or tfrecord"),
            (self.num_frames >= 1 and self.clip_seconds > 0, "num_frames >= 1 and clip_seconds > 0"),
            (self.frame_stride is None or self.frame_stride >= 1, "frame_stride must be >= 1"),
            (self.test_windows >= 1, "test_windows must be >= 1"),
            (self.crop_size >= 1, "crop_size must be >= 1"),
            (self.crop in ("random_resized", "scale_jitter"), "crop must be random_resized or scale_jitter"),
            (0 < self.crop_area[0] <= self.crop_area[1] <= 1, "crop_area must be 0 < lo <= hi <= 1"),
            (0 < self.crop_aspect[0] <= self.crop_aspect[1], "crop_aspect must be 0 < lo <= hi"),
            (0 < self.jitter_side[0] <= self.jitter_side[1] <= 1, "jitter_side must be 0 < lo <= hi <= 1"),
            (0 < self.eval_crop_fraction <= 1, "eval_crop_fraction must be in (0, 1]"),
            (min(self.time_masks, self.freq_masks, self.time_mask_max, self.freq_mask_max) >= 0,
             "SpecAugment counts and widths must be >= 0"),
            (self.mel_std is None or self.mel_std > 0, "mel_std must be > 0"),
            (self.labels in LABEL_KINDS, f"labels must be one of {', '.join(LABEL_KINDS)}"),
            (self.epochs is None or self.epochs >= 1, "epochs must be >= 1 or None"),
            (self.num_workers >= 0 and self.prefetch >= 1, "num_workers >= 0 and prefetch >= 1"),
            (self.on_error in (None, "skip", "raise"), "on_error must be skip or raise"),
            (self.rgb_normalization in RGB_NORMALIZATIONS,
             f"rgb_normalization must be one of {', '.join(RGB_NORMALIZATIONS)}"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError(f"InputConfig: {'; '.join(bad)}")

    @property
    def spectrogram_rows(self) -> int:
        return round(100 * self.clip_seconds)


# presets

def audioset_input() -> InputConfig:
    """AudioSet (multi-label, 527 classes): 8 frames over 8 s, 800 x 128 spectrogram, 224 crops with
    scale jitter and flips, SpecAugment; no colour augmentation (as scenic's video configs)."""
    return InputConfig()


def vggsound_input() -> InputConfig:
    """VGGSound (one label per clip, 309 classes): as AudioSet, labels as class indices."""
    return InputConfig(labels="class_index")


def epic_input() -> InputConfig:
    """EPIC-Kitchens-100 (verb + noun): 32 consecutive frames (stride 1, 1.28 s), 2 s of spectrogram."""
    return InputConfig(num_frames=32, frame_stride=1, clip_seconds=2.0, labels="verb_noun")


def tiny_input() -> InputConfig:
    """CPU tests: 4 frames over 1 s, 32 px crops, 100 x 128 spectrogram, batches of 4."""
    return InputConfig(batch_size=4, num_frames=4, clip_seconds=1.0, crop_size=32, shuffle_buffer=8,
                       time_mask_max=20, freq_mask_max=16)
