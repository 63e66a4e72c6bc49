"""Parameter and FLOP counts: the analytic formulas against the built model and XLA's cost analysis."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from mbt.config import ModelConfig
from mbt.flops import (
    analytic_flops,
    analytic_params,
    block_flops,
    flops_rows,
    format_table,
    xla_flops,
    xla_params,
)
from tests.mbt.models import small_model
from tools import flops_cmd

B16 = ModelConfig(variant="B/16")  # 8 frames of 224x224 + 8 s of spectrogram


@pytest.mark.parametrize(
    "changes",
    [  # B/16 two-stream and shared counts are checked in test_model.py
        {},
        {"share_encoder": True},
        {"fusion": "self_attention", "fusion_layer": 1},
        {"fusion": "cross_attention", "rgb_tokenizer": "tubelet", "classifier": "gap", "head": "verb_noun"},
        {"fusion": "none", "modalities": ("spectrogram",)},
    ],
)
def test_analytic_params_match_the_built_model(changes):
    cfg = dataclasses.replace(small_model(), **changes)
    assert analytic_params(cfg) == xla_params(cfg)


def test_block_flops_is_the_textbook_formula():
    n, d = 1970, 768
    assert block_flops(n, n, d, 4 * d) == 24 * n * d * d + 4 * n * n * d


def test_bottleneck_is_cheapest_at_every_fusion_layer():
    late = analytic_flops(dataclasses.replace(B16, fusion="none"))
    for lf in range(B16.num_layers):
        cost = {f: analytic_flops(dataclasses.replace(B16, fusion=f, fusion_layer=lf))
                for f in ("bottleneck", "self_attention", "cross_attention")}  # fmt: skip
        assert cost["bottleneck"] < cost["self_attention"] < cost["cross_attention"], lf
        assert cost["bottleneck"] < 1.01 * late  # B = 4 extra tokens cost almost nothing
    at_late = {analytic_flops(dataclasses.replace(B16, fusion=f, fusion_layer=12)) for f in ("bottleneck", "self_attention")}
    assert at_late == {late}


@pytest.mark.slow
def test_xla_flops_agree_with_analytic_count():
    """B/16 widths, depth 2 with L_f = 1 (one separate, one fused layer: every layer of the full model is
    one of the two), on a short clip (2 frames, 2.56 s) to keep XLA's compiles short.

    `mbt flops` prints the full 12-layer, 8-frame, 8-second numbers (ratio 1.007 there).
    """
    base = dataclasses.replace(B16, depth=2, fusion_layer=1, num_frames=2, spectrogram_frames=256)
    xla = {}
    for fusion in ("bottleneck", "self_attention", "cross_attention"):
        cfg = dataclasses.replace(base, fusion=fusion)
        xla[fusion], analytic = xla_flops(cfg), analytic_flops(cfg)
        assert abs(xla[fusion] / analytic - 1) < 0.10, (fusion, xla[fusion], analytic)
    assert xla["bottleneck"] < xla["self_attention"] < xla["cross_attention"]


def test_flops_table_rows():
    rows = list(flops_rows(small_model(), ["bottleneck", "self_attention"], [0, 2], xla=False))
    assert [(r.fusion, r.fusion_layer) for r in rows] == [
        ("bottleneck", 0), ("bottleneck", 2), ("self_attention", 0), ("self_attention", 2)
    ]  # fmt: skip
    assert rows[1].analytic_gflops == rows[3].analytic_gflops  # L_f = L is late fusion either way
    assert rows[2].params < rows[3].params  # joint layers have one set of weights
    text = format_table(rows)
    assert "GFLOPs XLA" in text and "self_attention" in text


def _parser():
    parser = argparse.ArgumentParser(prog="mbt")
    flops_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_flops_command_prints_a_row_per_strategy_and_layer(capsys):
    tiny_clip = ["--preset", "tiny", "--frames", "2", "--seconds", "0.64", "--image-size", "32"]
    args = _parser().parse_args(["flops", *tiny_clip, "--no-xla", "--fusion-layers", "0", "1", "2"])
    assert flops_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert out.count("bottleneck ") == 3 and out.count("cross_attention ") == 3
    assert "GFLOPs analytic" in out
    # With XLA (one small compile): the XLA column and the ratio are filled in.
    args = _parser().parse_args(["flops", *tiny_clip, "--fusion", "bottleneck", "--fusion-layers", "0"])
    assert flops_cmd.run(args) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert row[:2] == ["bottleneck", "0"] and float(row[3]) > 0 and float(row[5]) > 0


def test_flops_command_reports_bad_options(capsys):
    args = _parser().parse_args(["flops", "--preset", "nope", "--no-xla"])
    assert flops_cmd.run(args) == 2
    assert "mbt_base_audioset" in capsys.readouterr().err
    args = _parser().parse_args(["flops", "--no-xla", "--fusion-layers", "13"])
    assert flops_cmd.run(args) == 2
    assert "0..12" in capsys.readouterr().err


def test_flops_command_takes_model_overrides(capsys):
    args, extra = _parser().parse_known_args(["flops", "--no-xla", "--fusion-layers", "0", "--model.variant=S/16"])
    assert args.takes_overrides and args.run is flops_cmd.run
    assert flops_cmd.run(args, extra) == 0
    assert "S/16 (depth 12, width 384)" in capsys.readouterr().out
    assert flops_cmd.run(args, ["--input.batch_size=2"]) == 2
    assert "only --model.FIELD=VALUE" in capsys.readouterr().err
    assert flops_cmd.run(args, ["--model.fusion_layers=2"]) == 2
    assert "valid fields" in capsys.readouterr().err


def test_flops_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["flops", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: mbt_base_audioset)" in out and "(default: [0, 2, 4, 6, 8, 10, 12])" in out


def test_flops_command_imports_no_jax():
    code = "import sys, tools.flops_cmd; assert 'jax' not in sys.modules and 'mbt.model' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
