"""`mbt table1`: the command line and the markdown table. Training the runs is mbt.train's (tested there);
a real Table 1 takes minutes, so it is measured by hand and recorded in the README."""

from __future__ import annotations

from tools import table1
from tools.cli import build_parser


def test_every_run_trains_the_tiny_preset_with_one_change():
    from mbt.train_config import get_config

    cfgs = {slug: get_config("tiny", ["optim.steps=7", *overrides]).model for slug, _, overrides in table1.RUNS}
    assert cfgs["audio_only"].modalities == ("spectrogram",) and cfgs["video_only"].modalities == ("rgb",)
    assert cfgs["late"].fused_layers == 0 and len(cfgs["late"].modalities) == 2
    assert (cfgs["bottleneck_lf2"].fusion, cfgs["bottleneck_lf2"].fused_layers) == ("bottleneck", 2)
    assert (cfgs["bottleneck_lf0"].fusion, cfgs["bottleneck_lf0"].fused_layers) == ("bottleneck", 4)
    assert (cfgs["self_attention_lf2"].fusion, cfgs["self_attention_lf2"].fused_layers) == ("self_attention", 2)


def test_command_line_and_markdown():
    args, extra = build_parser().parse_known_args(
        ["table1", "--data", "d", "--steps", "5", "--runs", "audio_only", "late", "--optim.base_lr=0.1"])
    assert (args.data, args.steps, args.runs, extra) == ("d", 5, ["audio_only", "late"], ["--optim.base_lr=0.1"])
    rows = [table1.Row("audio_only", "audio only", 0.5, None, 0.5, 0.55, 32, 61.0),
            table1.Row("late", "late fusion (L_f = 4)", 0.90625, 0.375, 0.5625, 0.993, 32, 150.4)]
    md = table1.markdown(rows, 5, "mbt table1 --data d --steps 5")
    assert "| audio only | 50.0 | – | 50.0 | 55.0 | 61 |" in md
    assert "| late fusion (L_f = 4) | 90.6 | 37.5 | 56.2 | 99.3 | 150 |" in md
    assert "on 32 clips after 5 steps" in md and md.rstrip().endswith("mbt table1 --data d --steps 5")
