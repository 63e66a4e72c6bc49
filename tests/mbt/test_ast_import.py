"""AST's weights in MBT: `mbt import ast` reproduces the original AST (golden outputs of YuanGongND/ast)
and Hugging Face's ASTForAudioClassification; bad checkpoints are one line; `--run.ast_checkpoint`
puts AST into an MBT's spectrogram stream."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import torch

from mbt.ast_checkpoint import ASTCheckpointError, ast_model_config, init_from_ast, read_ast
from mbt.config import ModelConfig
from mbt.flops import analytic_params, xla_params
from mbt.model import MBT, param_shapes
from mbt.run_dir import load_run, read_data_record
from tools.cli import main

GOLDEN = "/work/shared/golden/ast"
PTH = os.path.join(GOLDEN, "original_ast_state_dict.pth")
pytestmark = pytest.mark.skipif(not os.path.exists(PTH), reason="the AST golden files are not on this machine")


def _logits(run: str, x: np.ndarray) -> np.ndarray:
    cfg, params, _ = load_run(run)
    logits, _ = MBT(cfg.model).apply({"params": params}, {"spectrogram": x})
    return np.asarray(logits)


def _fail(argv: list[str], capsys) -> str:
    """The one stderr line of a refused `mbt` command (exit 2, no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------------
# The original AST (a .pth of the AST repository) and Hugging Face's port.
# ---------------------------------------------------------------------------------------------------
def test_original_ast_reproduced_through_the_command(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["import", "ast", PTH, "--workdir", run, "--heads", "4"]) == 0
    assert "12x25 patches of 256 spectrogram rows" in capsys.readouterr().out

    x = np.load(os.path.join(GOLDEN, "inputs.npy"))  # [2, 256, 128], already normalised
    expected = np.load(os.path.join(GOLDEN, "expected_original_ast.npz"))["logits"]
    np.testing.assert_allclose(_logits(run, x), expected, atol=1e-5)

    cfg, _, step = load_run(run)
    assert step == 0 and cfg.model.modalities == ("spectrogram",)
    assert (cfg.model.spectrogram_frames, cfg.model.spectrogram_stride) == (256, (10, 10))
    assert (cfg.input.mel_mean, cfg.input.mel_std) == (-4.2677393, 4.5689974 * 2)
    record = read_data_record(run)
    assert record["features"]["kind"] == "kaldi_fbank"
    assert (record["mel_mean"], record["mel_std"]) == (-4.2677393, 4.5689974 * 2)
    assert record["classes"] == [f"class_{i}" for i in range(5)]


def test_the_run_evaluates_like_any_other(tmp_path, dataset, capsys):
    """`mbt eval` on the imported audio-only run (5 classes, as the test dataset has)."""
    run = str(tmp_path / "run")
    assert main(["import", "ast", PTH, "--workdir", run, "--heads", "4"]) == 0
    assert main(["eval", "--workdir", run, "--data", dataset, "--split", "train"]) == 0
    assert "mAP" in capsys.readouterr().out


def test_predict_on_a_video_computes_asts_input(tmp_path, capsys):
    """`mbt predict` on a real clip: Kaldi fbank (data.json's kind) normalised with AST's constants, so
    its probabilities are the model's on AST's own input for that clip (the golden torchaudio fbank)."""
    video = os.path.join(os.path.dirname(__file__), "..", "data", "pyfeat_caminandes_4s.mp4")
    run, out = str(tmp_path / "run"), str(tmp_path / "p.json")
    assert main(["import", "ast", PTH, "--workdir", run, "--heads", "4"]) == 0
    assert main(["predict", video, "--workdir", run, "--output", out]) == 0
    capsys.readouterr()
    window = json.load(open(out))["videos"][0]["windows"][0]
    got = dict(window["top"]["fused"])
    x = np.load(os.path.join(GOLDEN, "features", "features.npz"))["ast_input_1024"][None, :256]
    want = jax.nn.sigmoid(_logits(run, x))[0]
    # within the fbank's own distance from torchaudio's (3e-4 per value, tests/pipelines/test_fbank.py)
    np.testing.assert_allclose([got[f"class_{i}"] for i in range(5)], want, atol=5e-3)


def _hugging_face_ast(folder, **config):
    from transformers import ASTConfig, ASTForAudioClassification

    torch.manual_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    num_mel_bins=128, max_length=52, frequency_stride=10, time_stride=12, num_labels=3,
                    id2label={0: "dog", 1: "bell", 2: "rain"}, label2id={"dog": 0, "bell": 1, "rain": 2},
                    **config)  # fmt: skip
    model = ASTForAudioClassification(cfg).eval()
    with torch.no_grad():  # every weight random and non-zero (the init leaves tokens and biases at 0)
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("eps", [1e-12, 1e-6])
def test_hugging_face_ast_reproduced(tmp_path, capsys, eps):
    """A random ASTForAudioClassification (frequency stride 10, time stride 12: a 12 x 4 grid) saved
    with save_pretrained, imported without torch's help, gives transformers' logits."""
    model = _hugging_face_ast(tmp_path / "hf", layer_norm_eps=eps)
    x = np.random.default_rng(0).normal(size=(2, 52, 128)).astype(np.float32)  # [B, T, mel], as HF takes it
    with torch.no_grad():
        expected = model(input_values=torch.from_numpy(x)).logits.numpy()

    run = str(tmp_path / "run")
    assert main(["import", "ast", str(tmp_path / "hf"), "--workdir", run]) == 0
    capsys.readouterr()
    np.testing.assert_allclose(_logits(run, x), expected, atol=1e-5)
    cfg, _, _ = load_run(run)
    assert cfg.model.spectrogram_stride == (12, 10) and cfg.model.layer_norm_epsilon == eps
    assert read_data_record(run)["classes"] == ["dog", "bell", "rain"]


def test_checkpoints_in_a_bucket_are_read_through_storage(gcs_bucket, tmp_path, capsys):
    """A .pth and a Hugging Face folder in gs://, imported into a run in the bucket."""
    from shards.format import storage

    _hugging_face_ast(tmp_path / "hf")
    for name in ("config.json", "model.safetensors"):
        storage.upload(str(tmp_path / "hf" / name), f"{gcs_bucket}/ast/hf/{name}")
    storage.upload(PTH, f"{gcs_bucket}/ast/original.pth")
    assert main(["import", "ast", f"{gcs_bucket}/ast/hf", "--workdir", f"{gcs_bucket}/runs/hf"]) == 0
    assert main(["import", "ast", f"{gcs_bucket}/ast/original.pth", "--workdir", f"{gcs_bucket}/runs/pth",
                 "--heads", "4"]) == 0
    capsys.readouterr()
    x = np.load(os.path.join(GOLDEN, "inputs.npy"))
    expected = np.load(os.path.join(GOLDEN, "expected_original_ast.npz"))["logits"]
    np.testing.assert_allclose(_logits(f"{gcs_bucket}/runs/pth", x), expected, atol=1e-5)
    assert read_data_record(f"{gcs_bucket}/runs/hf")["classes"] == ["dog", "bell", "rain"]


def test_an_ast_model_counts_its_parameters():
    cfg = ast_model_config(read_ast(PTH, heads=4))
    assert cfg.spectrogram_grid == (25, 12) and cfg.num_tokens("spectrogram") == 302
    assert analytic_params(cfg) == xla_params(cfg)


# ---------------------------------------------------------------------------------------------------
# Checkpoints that are refused, each in one line.
# ---------------------------------------------------------------------------------------------------
class Opaque:
    """A pickled object, as torch.save of a whole model stores one."""


def test_a_pth_holding_code_or_objects_is_never_unpickled(tmp_path, capsys):
    torch.save({"model": Opaque()}, tmp_path / "object.pth")
    # protocol 0: GLOBAL os.system, then a call of it; a full unpickle would run it
    (tmp_path / "code.pth").write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "ran").encode() + b"'\ntR.")
    for name in ("object.pth", "code.pth"):
        err = _fail(["import", "ast", str(tmp_path / name), "--workdir", str(tmp_path / name) + ".run"], capsys)
        assert "refusing to unpickle" in err
    assert not (tmp_path / "ran").exists()


def test_broken_or_foreign_checkpoints_are_one_line(tmp_path, capsys):
    data = open(PTH, "rb").read()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    sd = torch.load(PTH, weights_only=True)
    torch.save({**sd, "module.v.blocks.1.mlp.fc1.weight": torch.zeros(96, 64)}, tmp_path / "mixed.pth")
    torch.save({**sd, "module.v.blocks.0.attn.qkv.weight": torch.zeros(190, 64)}, tmp_path / "qkv.pth")
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    cases = {"truncated.pth": "not a complete torch checkpoint", "other.pth": "is not an AST checkpoint",
             "vit": "not an audio-spectrogram-transformer", "mixed.pth": "encoderblock_1/mlp/hidden/kernel (64, 96)",
             "qkv.pth": "attn.qkv is (190, 64)"}
    for name, why in cases.items():
        err = _fail(["import", "ast", str(tmp_path / name), "--workdir", str(tmp_path / "run"), "--heads", "4"],
                    capsys)
        assert why in err, err
    assert not (tmp_path / "run").exists()


def test_heads_are_asked_for_when_the_weights_cannot_tell(tmp_path, capsys):
    err = _fail(["import", "ast", PTH, "--workdir", str(tmp_path / "run")], capsys)
    assert "pass --heads N" in err
    err = _fail(["import", "ast", PTH, "--workdir", str(tmp_path / "run"), "--heads", "5"], capsys)
    assert "does not divide into 5 heads" in err


def test_a_clip_length_that_does_not_fit_the_positions(tmp_path, capsys):
    err = _fail(["import", "ast", PTH, "--workdir", str(tmp_path / "run"), "--heads", "4", "--frames", "512"],
                capsys)
    assert "use --frames from 256 to 265" in err


# ---------------------------------------------------------------------------------------------------
# --run.ast_checkpoint: AST in an MBT's spectrogram stream.
# ---------------------------------------------------------------------------------------------------
def _mbt(**changes) -> ModelConfig:
    """A two-stream MBT as wide as the golden AST: 16x16 patches, time-major, 1.6 s (a 10 x 8 grid)."""
    base = dict(variant="Ti/16", depth=2, width=64, num_heads=4, mlp_dim=128, num_frames=2, image_size=32,
                spectrogram_frames=160, fusion="bottleneck", fusion_layer=1, num_classes=5)
    return ModelConfig(**{**base, **changes})


def _zeros(cfg: ModelConfig) -> dict:
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(cfg))


def _ast_pos_grid() -> np.ndarray:
    """The golden AST's position embeddings as [D, frequency 12, time 25], as AST's code reshapes them."""
    pos = torch.load(PTH, weights_only=True)["module.v.pos_embed"]
    return pos[0, 2:].T.reshape(1, 64, 12, 25)


def test_ast_checkpoint_initialises_the_spectrogram_stream():
    cfg = _mbt()
    sd = {k: v.numpy() for k, v in torch.load(PTH, weights_only=True).items()}
    p = init_from_ast(_zeros(cfg), PTH, cfg)["params"]

    tok = p["spectrogram_tokenizer"]
    np.testing.assert_array_equal(tok["embedding"]["kernel"][:, :, 0, :],
                                  sd["module.v.patch_embed.proj.weight"][:, 0].transpose(2, 1, 0))
    np.testing.assert_array_equal(tok["cls"], sd["module.v.cls_token"])
    # AST cuts its grid from the middle: frequency 12 -> 8 (rows 2..9), time 25 -> 10 (columns 7..16)
    grid = _ast_pos_grid()[0, :, 2:10, 7:17].numpy()  # [D, f, t]
    expected = np.concatenate([sd["module.v.pos_embed"][:, :1], grid.transpose(2, 1, 0).reshape(1, 80, 64)], 1)
    np.testing.assert_array_equal(tok["pos_embedding"], expected)  # ours: time-major, CLS first

    for layer in (0, 1):  # layer 0 runs alone, layer 1 with the bottlenecks: both are the stream's own
        block, b = p["encoder"][f"encoderblock_{layer}_spectrogram"], f"module.v.blocks.{layer}."
        q = sd[b + "attn.qkv.weight"][:64]
        np.testing.assert_array_equal(block["attention"]["query"]["kernel"], q.T.reshape(64, 4, 16))
        np.testing.assert_array_equal(block["mlp"]["output"]["kernel"], sd[b + "mlp.fc2.weight"].T)
        assert not p["encoder"][f"encoderblock_{layer}_rgb"]["mlp"]["hidden"]["kernel"].any()  # RGB untouched
    np.testing.assert_array_equal(p["encoder"]["encoder_norm_spectrogram"]["scale"], sd["module.v.norm.weight"])
    assert not p["head"]["kernel"].any() and not p["rgb_tokenizer"]["cls"].any()


def test_a_longer_clip_stretches_the_positions_as_ast_does():
    """Time 25 -> 30 patches (4.8 s) is torch's bilinear interpolation; frequency 12 -> 8 still a cut."""
    cfg = _mbt(spectrogram_frames=480, classifier="gap")
    pos = init_from_ast(_zeros(cfg), PTH, cfg)["params"]["spectrogram_tokenizer"]["pos_embedding"]
    grid = torch.nn.functional.interpolate(_ast_pos_grid(), size=(12, 30), mode="bilinear")[0, :, 2:10]
    np.testing.assert_allclose(pos, grid.numpy().transpose(2, 1, 0).reshape(1, 240, 64), rtol=0, atol=1e-6)


def test_ast_layout_model_gets_exactly_the_imported_parameters():
    ckpt = read_ast(PTH, heads=4)
    cfg = ast_model_config(ckpt)
    p = init_from_ast(_zeros(cfg), PTH, cfg)["params"]
    flat = jax.tree_util.tree_leaves_with_path(p)
    for path, value in flat:
        key = "/".join(k.key for k in path)
        if not key.startswith("head"):  # the head is a new task's
            np.testing.assert_array_equal(value, ckpt.params[key], err_msg=key)


def test_a_model_of_another_width_is_refused_in_one_line():
    with pytest.raises(ASTCheckpointError) as e:
        init_from_ast(_zeros(_mbt(width=32, mlp_dim=64)), PTH, _mbt(width=32, mlp_dim=64))
    assert len(str(e.value).splitlines()) == 1 and "width 64 (the model's: 32)" in str(e.value)


def test_run_ast_checkpoint_builds_a_run(tmp_path, tiny_train):
    """`--run.ast_checkpoint` through the training config: the state a run starts from."""
    from mbt.train_config import get_config
    from mbt.train_state import init_state

    overrides = [o for o in tiny_train if not o.startswith(("--model.width", "--model.num_heads", "--model.mlp_dim"))]
    cfg = get_config("tiny", overrides + ["--model.width=64", "--model.num_heads=4", "--model.mlp_dim=128",
                                          f"--run.ast_checkpoint={PTH}"])  # fmt: skip
    state = init_state(cfg, 2, 1, 0)
    kernel = state.params["encoder"]["encoderblock_1_spectrogram"]["mlp"]["hidden"]["kernel"]
    np.testing.assert_array_equal(kernel, torch.load(PTH, weights_only=True)["module.v.blocks.1.mlp.fc1.weight"].T)
    assert dataclasses.asdict(cfg)["run"]["ast_checkpoint"] == PTH


def test_a_run_saved_before_these_settings_resumes(tmp_path):
    """config.json of a run from before the AST settings existed: they read as their defaults."""
    from mbt.checkpoints import Checkpointer, config_dict
    from mbt.run_dir import write_config_dict
    from mbt.train_config import get_config

    cfg = get_config("tiny")
    old = config_dict(cfg)
    for name in ("spectrogram_stride", "spectrogram_order", "head_norm", "layer_norm_epsilon", "gelu_exact"):
        del old["model"][name]
    write_config_dict(str(tmp_path), old)
    Checkpointer(str(tmp_path), cfg).close()
    with pytest.raises(Exception, match="model.gelu_exact: False -> True"):
        Checkpointer(str(tmp_path), dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gelu_exact=True)))


def test_vit_init_of_an_ast_layout_starts_as_ast_starts_from_deit(tmp_path):
    """ViT weights into AST's layout: the image's rows become frequency (kernel and grid transposed), the
    distillation token and its position start as the CLS's."""
    from mbt.vit_checkpoint import init_from_vit, resize_grid
    from tests.mbt.test_vit_checkpoint import write_vit_npz

    vit = write_vit_npz(tmp_path / "vit.npz", depth=2, width=64, heads=4, mlp=128, grid=4)
    cfg = ast_model_config(read_ast(PTH, heads=4))  # 12 frequency x 25 time patches
    tok = init_from_vit(_zeros(cfg), tmp_path / "vit.npz", cfg)["params"]["spectrogram_tokenizer"]
    np.testing.assert_array_equal(tok["embedding"]["kernel"][:, :, 0],
                                  vit["embedding/kernel"].sum(2).transpose(1, 0, 2))
    np.testing.assert_array_equal(tok["dist"], vit["cls"])
    pos = vit["Transformer/posembed_input/pos_embedding"]
    np.testing.assert_array_equal(tok["pos_embedding"][0, :2], np.concatenate([pos[0, :1]] * 2))
    grid = resize_grid(pos[0, 1:].reshape(4, 4, 64), (12, 25))  # rows: frequency, as AST's tokens run
    np.testing.assert_allclose(tok["pos_embedding"][0, 2:], grid.reshape(300, 64), atol=1e-6)


def test_ast_checkpoint_and_init_from_are_not_both_given():
    from mbt.overrides import OverrideError
    from mbt.train_config import get_config

    with pytest.raises(OverrideError, match="run.ast_checkpoint and run.init_from"):
        get_config("tiny", [f"--run.ast_checkpoint={PTH}", "--run.init_from=runs/x"]).check()
