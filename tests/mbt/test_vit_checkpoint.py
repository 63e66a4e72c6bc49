"""ViT .npz import: a forward pass checked against plain numpy, where each weight goes, and the errors."""

import dataclasses

import numpy as np
import pytest

from mbt.config import MBTError
from mbt.model import MBT
from mbt.vit_checkpoint import init_from_vit, load_vit_npz, resize_grid
from tests.mbt.models import small_model

GENERATIONS = {  # (attention, second LayerNorm, MLP) per naming generation
    "2020": ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "new": ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}


def write_vit_npz(path, *, depth=2, width=32, heads=2, mlp=64, grid=2, generation="2020", seed=0):
    """A random checkpoint in the public ViT format (flat np.savez, '/'-joined keys), head included."""
    rs = np.random.RandomState(seed)
    normal = lambda *shape, s=0.2: rs.normal(0.0, s, shape).astype(np.float32)  # noqa: E731
    hd = width // heads
    attention, norm2, mlp_block = GENERATIONS[generation]
    ckpt = {
        "embedding/kernel": normal(16, 16, 3, width, s=0.05),
        "embedding/bias": normal(width),
        "cls": normal(1, 1, width),
        "Transformer/posembed_input/pos_embedding": normal(1, 1 + grid * grid, width),
        "Transformer/encoder_norm/scale": 1 + normal(width),
        "Transformer/encoder_norm/bias": normal(width),
        "pre_logits/kernel": normal(width, width),
        "pre_logits/bias": normal(width),
        "head/kernel": normal(width, 1000),
        "head/bias": normal(1000),
    }
    for i in range(depth):
        block = f"Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", norm2):
            ckpt[f"{block}/{ln}/scale"] = 1 + normal(width)
            ckpt[f"{block}/{ln}/bias"] = normal(width)
        for name in ("query", "key", "value"):
            ckpt[f"{block}/{attention}/{name}/kernel"] = normal(width, heads, hd)
            ckpt[f"{block}/{attention}/{name}/bias"] = normal(heads, hd)
        ckpt[f"{block}/{attention}/out/kernel"] = normal(heads, hd, width)
        ckpt[f"{block}/{attention}/out/bias"] = normal(width)
        ckpt[f"{block}/{mlp_block}/Dense_0/kernel"] = normal(width, mlp)
        ckpt[f"{block}/{mlp_block}/Dense_0/bias"] = normal(mlp)
        ckpt[f"{block}/{mlp_block}/Dense_1/kernel"] = normal(mlp, width)
        ckpt[f"{block}/{mlp_block}/Dense_1/bias"] = normal(width)
    np.savez(path, **ckpt)
    return ckpt


# ---------------------------------------------------------------------------------------------------
# An independent ViT forward pass in float64 numpy, straight from the checkpoint's keys.
# ---------------------------------------------------------------------------------------------------


def _layer_norm(x, c, prefix):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * c[f"{prefix}/scale"] + c[f"{prefix}/bias"]


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def numpy_vit_cls(c, frames, depth, generation):
    """frames [F, S, S, 3] -> the CLS token after the encoder norm, as ViT computes it frame by frame."""
    c = {k: v.astype(np.float64) for k, v in c.items()}
    attention, norm2, mlp_block = GENERATIONS[generation]
    f, s, _, _ = frames.shape
    g = s // 16
    patches = frames.reshape(f, g, 16, g, 16, 3).transpose(0, 1, 3, 2, 4, 5).reshape(f * g * g, -1)
    x = patches @ c["embedding/kernel"].reshape(16 * 16 * 3, -1) + c["embedding/bias"]
    pos = c["Transformer/posembed_input/pos_embedding"][0]
    x = x + np.tile(pos[1:], (f, 1))  # the same spatial position code in every frame
    x = np.concatenate([c["cls"][0] + pos[:1], x])
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        y = _layer_norm(x, c, f"{b}/LayerNorm_0")
        q, k, v = (np.einsum("nd,dhk->nhk", y, c[f"{b}/{attention}/{n}/kernel"]) + c[f"{b}/{attention}/{n}/bias"]
                   for n in ("query", "key", "value"))  # fmt: skip
        logits = np.einsum("nhk,mhk->hnm", q, k) / np.sqrt(q.shape[-1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        y = np.einsum("hnm,mhk->nhk", weights, v)
        x = x + np.einsum("nhk,hkd->nd", y, c[f"{b}/{attention}/out/kernel"]) + c[f"{b}/{attention}/out/bias"]
        y = _layer_norm(x, c, f"{b}/{norm2}")
        y = _gelu_tanh(y @ c[f"{b}/{mlp_block}/Dense_0/kernel"] + c[f"{b}/{mlp_block}/Dense_0/bias"])
        x = x + y @ c[f"{b}/{mlp_block}/Dense_1/kernel"] + c[f"{b}/{mlp_block}/Dense_1/bias"]
    return _layer_norm(x, c, "Transformer/encoder_norm")[0]


@pytest.mark.parametrize("generation", ["2020", "new"])
def test_rgb_only_model_reproduces_numpy_vit(generation, tmp_path, random_variables, random_inputs, fast_jit):
    cfg = dataclasses.replace(small_model(), modalities=("rgb",), fusion="none")
    ckpt = write_vit_npz(tmp_path / "vit.npz", generation=generation)
    params = init_from_vit(random_variables(cfg)["params"], tmp_path / "vit.npz", cfg)
    inputs = random_inputs(cfg, batch_size=2)
    _, inter = fast_jit(lambda v, x: MBT(cfg).apply(v, x))({"params": params}, inputs)
    for i in range(2):
        want = numpy_vit_cls(ckpt, inputs["rgb"][i].astype(np.float64), cfg.num_layers, generation)
        np.testing.assert_allclose(inter["pre_logits"]["rgb"][i], want, rtol=1e-4, atol=1e-4)


def test_every_weight_lands_where_it_should(tmp_path, random_variables):
    """Two streams, tubelets, a 14x14 checkpoint grid resized to both modalities' grids."""
    cfg = dataclasses.replace(small_model(), rgb_tokenizer="tubelet", fusion="bottleneck", fusion_layer=1)
    ckpt = write_vit_npz(tmp_path / "vit.npz", grid=14)
    before = random_variables(cfg)["params"]
    p = init_from_vit(before, tmp_path / "vit.npz", cfg)

    kernel = ckpt["embedding/kernel"]
    rgb, spec = p["rgb_tokenizer"], p["spectrogram_tokenizer"]
    np.testing.assert_array_equal(rgb["embedding"]["kernel"][1], kernel)  # central frame of 2 ...
    assert not np.any(rgb["embedding"]["kernel"][0])  # ... and zeros on the other
    np.testing.assert_allclose(spec["embedding"]["kernel"], kernel.sum(axis=2, keepdims=True), rtol=1e-6)
    for tok in (rgb, spec):
        np.testing.assert_array_equal(tok["cls"], ckpt["cls"])
        np.testing.assert_array_equal(tok["embedding"]["bias"], ckpt["embedding/bias"])

    posemb = ckpt["Transformer/posembed_input/pos_embedding"]
    grid = posemb[0, 1:].reshape(14, 14, -1)
    assert rgb["pos_embedding"].shape == (1, 1 + 1 * 2 * 2, 32)  # 2 frames / tubelets of 2 = 1 step
    np.testing.assert_array_equal(rgb["pos_embedding"][0, 0], posemb[0, 0])
    np.testing.assert_allclose(rgb["pos_embedding"][0, 1:], resize_grid(grid, (2, 2)).reshape(4, -1), rtol=1e-6)
    np.testing.assert_allclose(spec["pos_embedding"][0, 1:], resize_grid(grid, (4, 8)).reshape(32, -1), rtol=1e-6)

    enc = p["encoder"]
    for layer in range(cfg.num_layers):
        for m in cfg.modalities:
            block = enc[f"encoderblock_{layer}_{m}"]
            src = f"Transformer/encoderblock_{layer}"
            np.testing.assert_array_equal(
                block["attention"]["query"]["kernel"], ckpt[f"{src}/MultiHeadDotProductAttention_1/query/kernel"]
            )
            np.testing.assert_array_equal(block["mlp_norm"]["scale"], ckpt[f"{src}/LayerNorm_2/scale"])
            np.testing.assert_array_equal(block["mlp"]["output"]["kernel"], ckpt[f"{src}/MlpBlock_3/Dense_1/kernel"])
    for m in cfg.modalities:
        np.testing.assert_array_equal(enc[f"encoder_norm_{m}"]["scale"], ckpt["Transformer/encoder_norm/scale"])
    # MBT's own parameters and the task head keep their initialisation.
    np.testing.assert_array_equal(enc["bottleneck"], before["encoder"]["bottleneck"])
    np.testing.assert_array_equal(p["head"]["kernel"], before["head"]["kernel"])


@pytest.mark.parametrize(
    "changes",
    [
        {"fusion": "self_attention", "fusion_layer": 1},  # joint block encoderblock_1
        {"share_encoder": True},
        {"classifier": "gap"},  # the checkpoint's CLS position is dropped
        {"modalities": ("spectrogram",)},
    ],
)
def test_other_layouts_load(changes, tmp_path, random_variables):
    cfg = dataclasses.replace(small_model(), **changes)
    ckpt = write_vit_npz(tmp_path / "vit.npz", generation="new", grid=14)
    p = init_from_vit(random_variables(cfg)["params"], ckpt, cfg)
    name = "encoderblock_1" if cfg.fusion == "self_attention" or cfg.share_encoder or len(cfg.modalities) == 1 else None
    if name:
        np.testing.assert_array_equal(
            p["encoder"][name]["attention"]["out"]["bias"],
            ckpt["Transformer/encoderblock_1/MultiHeadDotProductAttention_0/out/bias"],
        )


def test_variables_or_params_come_back_in_the_same_form(tmp_path, random_variables):
    cfg = dataclasses.replace(small_model(), modalities=("rgb",), fusion="none")
    ckpt = write_vit_npz(tmp_path / "vit.npz")
    variables = random_variables(cfg)
    from_variables = init_from_vit(variables, ckpt, cfg)
    assert set(from_variables) == {"params"}
    np.testing.assert_array_equal(from_variables["params"]["rgb_tokenizer"]["cls"], ckpt["cls"])
    from_params = init_from_vit(variables["params"], ckpt, cfg)
    np.testing.assert_array_equal(from_params["rgb_tokenizer"]["cls"], ckpt["cls"])
    with pytest.raises(MBTError, match="needs MBT parameters"):
        init_from_vit({"model": variables["params"]}, ckpt, cfg)


def test_resize_grid_is_bilinear_with_aligned_corners():
    rows, cols = np.meshgrid(np.arange(14.0), np.arange(14.0), indexing="ij")
    grid = np.stack([2 * rows + 3 * cols, -rows], axis=-1)  # linear in the grid position
    out = resize_grid(grid, (50, 8))
    r, c = np.meshgrid(np.arange(50.0) * 13 / 49, np.arange(8.0) * 13 / 7, indexing="ij")
    np.testing.assert_allclose(out, np.stack([2 * r + 3 * c, -r], axis=-1), atol=1e-9)


def test_missing_keys_are_listed(tmp_path, random_variables):
    cfg = small_model()  # depth 2
    ckpt = write_vit_npz(tmp_path / "vit.npz", depth=1)  # one layer short
    del ckpt["cls"]
    with pytest.raises(MBTError) as e:
        init_from_vit(random_variables(cfg)["params"], ckpt, cfg)
    message = str(e.value)
    assert "missing keys" in message
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in message
    assert "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias" in message
    assert "cls" in message
    assert "encoderblock_0" not in message


def test_mismatched_shapes_are_listed(tmp_path, random_variables):
    cfg = small_model()  # width 32
    write_vit_npz(tmp_path / "vit.npz", width=48, heads=3, mlp=96)
    with pytest.raises(MBTError, match=r"mismatched keys .*embedding/kernel: checkpoint gives \(16, 16, 3, 48\)"):
        init_from_vit(random_variables(cfg)["params"], tmp_path / "vit.npz", cfg)


def test_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "vit.npz").write_bytes(b"not a zip")
    with pytest.raises(MBTError, match="cannot read ViT checkpoint"):
        load_vit_npz(tmp_path / "vit.npz")
    with pytest.raises(MBTError, match="cannot read ViT checkpoint"):
        load_vit_npz(tmp_path / "missing.npz")
