"""The training input: shards -> shuffled, sampled, augmented, fixed-shape numpy batches (see loader)."""

from shards.input.grain_source import ShardDataSource
from shards.input.config import InputConfig, audioset_input, epic_input, tiny_input, vggsound_input
from shards.input.loader import InputIterator, make_input, mel_statistics
from shards.input.pipeline import BadInputWarning

__all__ = ["InputConfig", "InputIterator", "ShardDataSource", "BadInputWarning", "make_input", "mel_statistics",
           "audioset_input", "vggsound_input", "epic_input", "tiny_input"]
