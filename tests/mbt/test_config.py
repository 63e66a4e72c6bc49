"""ModelConfig: the variant table, validation and command-line overrides; the preset registry."""

import dataclasses

import pytest

from mbt.config import VARIANTS, MBTError, ModelConfig
from mbt.overrides import OverrideError, apply_overrides
from mbt.train_config import PRESETS, TrainConfig, get_config
from shards.input import InputConfig
from tests.mbt.models import small_model


def test_variant_table_resolves_vit_sizes():
    b16 = ModelConfig(variant="B/16")
    assert (b16.num_layers, b16.hidden_size, b16.heads, b16.mlp_size, b16.patch_size) == (12, 768, 12, 3072, 16)
    assert VARIANTS["L/16"] == (24, 1024, 16, 4096)
    small = ModelConfig(variant="S/16", depth=2, fusion_layer=1)
    assert (small.num_layers, small.hidden_size) == (2, 384)


def test_token_geometry_of_the_paper_setting():
    cfg = ModelConfig()  # 8 frames of 224x224, 8 s of spectrogram
    assert cfg.rgb_grid == (8, 14, 14)
    assert cfg.spectrogram_grid == (50, 8)
    assert cfg.num_tokens("rgb") == 8 * 196 + 1
    assert cfg.num_tokens("spectrogram") == 400 + 1
    tubelets = dataclasses.replace(cfg, rgb_tokenizer="tubelet", classifier="gap")
    assert tubelets.num_tokens("rgb") == 4 * 196
    assert cfg.input_shapes(3) == {"rgb": (3, 8, 224, 224, 3), "spectrogram": (3, 800, 128)}


def test_every_preset_builds_and_says_what_it_is():
    for name, make in PRESETS.items():
        cfg = get_config(name)
        assert cfg == make() and make.__doc__
    assert get_config("mbt_base_epic").model.head == "verb_noun"
    assert get_config("mbt_base_audioset").model.variant == "B/16"
    with pytest.raises(OverrideError, match="mbt_base_audioset"):
        get_config("mbt_base")


def test_fused_layers_follows_strategy_and_modalities():
    cfg = ModelConfig(fusion_layer=8)
    assert cfg.fused_layers == 4
    assert dataclasses.replace(cfg, fusion="none").fused_layers == 0
    assert dataclasses.replace(cfg, fusion_layer=12).fused_layers == 0
    assert dataclasses.replace(cfg, modalities=("rgb",)).fused_layers == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fusion": "early"}, "bottleneck"),
        ({"fusion_layer": 13}, "0..12"),
        ({"modalities": ("rgb", "audio")}, "spectrogram"),
        ({"modalities": ()}, "one or both"),
        ({"classifier": "cls"}, "gap"),
        ({"head": "softmax"}, "multiclass"),
        ({"rgb_tokenizer": "tubelet", "num_frames": 7}, "tubelet_frames"),
        ({"image_size": 200}, "patch size"),
        ({"spectrogram_frames": 810}, "patch size"),
        ({"width": 100, "num_heads": 12}, "divisible"),
        ({"dropout": 1.0}, r"\[0, 1\)"),
        ({"variant": "B/32"}, "B/16"),
        ({"dtype": "float16"}, "bfloat16"),
    ],
)
def test_invalid_configs_say_what_is_wrong(changes, message):
    with pytest.raises(MBTError, match=message):
        dataclasses.replace(ModelConfig(), **changes)


def test_modalities_are_put_in_canonical_order():
    assert ModelConfig(modalities=["spectrogram", "rgb"]).modalities == ("rgb", "spectrogram")


def test_overrides_are_typed_by_the_field():
    cfg = apply_overrides(
        TrainConfig(model=small_model(), input=InputConfig()),
        ["model.fusion_layer=2", "--model.share_encoder=true", "model.modalities=spectrogram, rgb",
         "model.dropout=0.1", "model.depth=None", "model.fusion=cross_attention"],
    ).model  # fmt: skip
    assert cfg.fusion_layer == 2 and cfg.share_encoder is True and cfg.dropout == 0.1
    assert cfg.modalities == ("rgb", "spectrogram") and cfg.depth is None and cfg.num_layers == 12
    assert cfg.fusion == "cross_attention"


def test_override_errors_list_valid_fields():
    with pytest.raises(OverrideError, match="valid fields: variant, depth, width") as e:
        apply_overrides(small_model(), ["fusion_layers=4"])
    assert "fusion_layer" in str(e.value)
    with pytest.raises(OverrideError, match="not a valid int"):
        apply_overrides(small_model(), ["fusion_layer=four"])
    with pytest.raises(OverrideError, match="boolean"):
        apply_overrides(small_model(), ["share_encoder=maybe"])
    with pytest.raises(OverrideError, match="field=value"):
        apply_overrides(small_model(), ["fusion_layer"])
    with pytest.raises(OverrideError, match=r"0\.\.2"):  # validation still runs after an override
        apply_overrides(small_model(), ["fusion_layer=3"])


def test_configs_are_frozen_and_hashable():
    cfg = small_model()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fusion_layer = 0  # type: ignore[misc]
    assert hash(cfg) == hash(small_model())


def test_a_run_to_start_from_gives_its_settings(tmp_path):
    from mbt.run_dir import fine_tune_config, write_config_dict

    start = get_config("mbt_base_vggsound", ["model.fusion_layer=4", "input.rgb_normalization=symmetric",
                                             "input.mel_mean=1.5", "input.mel_std=2.5"])
    write_config_dict(str(tmp_path), dataclasses.asdict(start))
    overrides = [f"run.init_from={tmp_path}", "optim.steps=7"]
    cfg = fine_tune_config(str(tmp_path), overrides)
    assert cfg.model == dataclasses.replace(start.model, num_classes=0)  # the class count: the new data's
    assert cfg.input == start.input and cfg.optim == dataclasses.replace(start.optim, steps=7)
    assert cfg.run.init_from == str(tmp_path) and cfg.run.seed == 0
