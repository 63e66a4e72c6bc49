"""The small model the model tests build: 2 layers of width 32 on 2 frames of 32x32 and 0.64 s of
spectrogram, 5 classes. (A test fixture, not a preset: the presets are mbt.train_config's.)"""

from mbt.config import ModelConfig


def small_model() -> ModelConfig:
    return ModelConfig(
        variant="Ti/16", depth=2, width=32, num_heads=2, mlp_dim=64,
        num_frames=2, image_size=32, spectrogram_frames=64,
        fusion="bottleneck", fusion_layer=1, num_bottlenecks=2, num_classes=5,
    )  # fmt: skip
