"""Kept for code written before shards/ had two rooms: `from shards.stream import make_input,
InputConfig` goes on working. New code imports them from shards.input."""

from shards.input import (BadInputWarning, InputConfig, InputIterator, audioset_input, epic_input,
                          make_input, mel_statistics, tiny_input, vggsound_input)

__all__ = ["BadInputWarning", "InputConfig", "InputIterator", "audioset_input", "epic_input", "make_input",
           "mel_statistics", "tiny_input", "vggsound_input"]
