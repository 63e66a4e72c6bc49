"""The MBT model on tiny configs: shapes, finiteness, information flow between modalities, eval mode."""

import dataclasses
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbt.attention_maps import token_offsets
from mbt.config import CLASSIFIERS, FUSIONS, HEADS, RGB_TOKENIZERS, MBTError, ModelConfig
from mbt.flops import analytic_params
from mbt.fusion import FuseBottlenecks
from mbt.model import MBT, count_params, init_params, param_shapes
from tests.mbt.models import small_model


def _expected_logit_shapes(cfg, batch):
    if cfg.head == "verb_noun":
        return {"verb": (batch, cfg.num_verb_classes), "noun": (batch, cfg.num_noun_classes)}
    return (batch, cfg.num_classes)


def _shape_tree(tree):
    return jax.tree.map(lambda x: tuple(x.shape), tree)


@pytest.mark.slow
def test_every_combination_traces_to_the_right_shapes():
    """All 48 fusion x classifier x head x tokenizer combinations, by jax.eval_shape, in bfloat16.

    bfloat16 is the stricter case (its logits must still come out float32); float32 and bfloat16 both
    run for real, per fusion strategy, below. One fused layer is enough for shapes and keeps the
    traces short; the mix of separate and fused layers runs for real below.
    """
    batch = 3
    for fusion, classifier, head, tokenizer in itertools.product(FUSIONS, CLASSIFIERS, HEADS, RGB_TOKENIZERS):
        cfg = dataclasses.replace(
            small_model(), depth=1, fusion_layer=0, fusion=fusion, classifier=classifier, head=head,
            rgb_tokenizer=tokenizer, num_verb_classes=3, num_noun_classes=4, dtype="bfloat16",
        )  # fmt: skip
        inputs = {m: jax.ShapeDtypeStruct(s, jnp.float32) for m, s in cfg.input_shapes(batch).items()}
        # init_with_output traces the model once for both its parameters and its outputs.
        (logits, inter), _ = jax.eval_shape(lambda x: MBT(cfg).init_with_output(jax.random.key(0), x), inputs)
        want = _expected_logit_shapes(cfg, batch)
        assert _shape_tree(logits) == want, cfg
        assert _shape_tree(inter["logits"]) == {m: want for m in cfg.modalities}
        assert _shape_tree(inter["pre_logits"]) == {m: (batch, cfg.hidden_size) for m in cfg.modalities}
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((logits, inter)))


# Each fusion strategy runs for real in float32 and bfloat16; classifier, head, tokenizer and
# share_encoder rotate so that each of their values also meets both dtypes.
_RUNS = [
    (fusion, dtype, CLASSIFIERS[(i + d) % 2], HEADS[(i + 2 * d) % 3], RGB_TOKENIZERS[(i // 2 + d) % 2], i // 2 != d)
    for i, fusion in enumerate(FUSIONS)
    for d, dtype in enumerate(("float32", "bfloat16"))
]


@pytest.mark.parametrize("fusion, dtype, classifier, head, tokenizer, share", _RUNS)
def test_forward_is_finite(fusion, dtype, classifier, head, tokenizer, share, random_variables, random_inputs, fast_jit):
    cfg = dataclasses.replace(
        small_model(), fusion=fusion, dtype=dtype, classifier=classifier, head=head, rgb_tokenizer=tokenizer,
        share_encoder=share, num_verb_classes=3, num_noun_classes=4,
        dropout=0.2, attention_dropout=0.2, stochastic_depth=0.5,
    )  # fmt: skip
    apply = fast_jit(lambda v, x, key: MBT(cfg).apply(v, x, return_attention=True, rngs={"dropout": key}))
    variables, inputs = random_variables(cfg), random_inputs(cfg, 2)
    logits, inter = apply(variables, inputs, jax.random.key(1))
    # Eval mode (the default): dropout and stochastic depth are off, so another key changes nothing.
    jax.tree.map(np.testing.assert_array_equal, (logits, inter), apply(variables, inputs, jax.random.key(2)))
    assert _shape_tree(logits) == _expected_logit_shapes(cfg, 2)
    for x in jax.tree.leaves((logits, inter)):
        assert np.all(np.isfinite(np.asarray(x, np.float32)))
    # The prediction is the mean of the per-modality logits.
    mean = jax.tree.map(lambda a, b: (a + b) / 2, inter["logits"]["rgb"], inter["logits"]["spectrogram"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), logits, mean)

    # Attention, laid out over [rgb | spectrogram | bottlenecks]: every row sums to one, and only the
    # fused layer (layer 1; layer 0 runs the streams separately) mixes modalities.
    attention = np.asarray(inter["attention"])
    offsets = token_offsets(cfg)
    n_all = max(s.stop for s in offsets.values())
    assert attention.shape == (cfg.num_layers, 2, n_all, n_all)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    rgb, spec = offsets["rgb"], offsets["spectrogram"]
    assert not np.any(attention[0][:, rgb, spec]) and not np.any(attention[0][:, spec, rgb])
    if fusion in ("bottleneck", "none"):
        assert not np.any(attention[1][:, rgb, spec])  # RGB never attends to a spectrogram token
    else:
        assert np.all(attention[1][:, rgb, spec].sum(-1) > 0)
    if fusion == "bottleneck":
        assert np.all(attention[1][:, rgb, offsets["bottleneck"]].sum(-1) > 0)


def test_bfloat16_compute_tracks_float32(random_variables, random_inputs, fast_jit):
    cfg = dataclasses.replace(small_model(), fusion="cross_attention")
    variables, inputs = random_variables(cfg), random_inputs(cfg)
    out = {}
    for dtype in ("float32", "bfloat16"):
        c = dataclasses.replace(cfg, dtype=dtype)
        out[dtype] = fast_jit(lambda v, x: MBT(c).apply(v, x)[1]["pre_logits"])(variables, inputs)
    for m in cfg.modalities:
        np.testing.assert_allclose(out["bfloat16"][m], out["float32"][m], rtol=0.1, atol=0.05)


@pytest.mark.parametrize("modality", ["rgb", "spectrogram"])
def test_single_modality_models(modality, random_variables, random_inputs, fast_jit):
    cfg = dataclasses.replace(small_model(), modalities=(modality,))
    variables = random_variables(cfg)
    assert set(variables["params"]) == {f"{modality}_tokenizer", "encoder", "head"}
    assert "bottleneck" not in variables["params"]["encoder"]  # nothing to fuse with
    if modality == "spectrogram":  # an RGB-only model runs in test_vit_checkpoint.py
        logits, inter = fast_jit(lambda v, x: MBT(cfg).apply(v, x))(variables, random_inputs(cfg))
        np.testing.assert_array_equal(logits, inter["logits"][modality])


def test_init_params_are_float32_even_for_bfloat16_compute():
    # Small, because init's RNG program compiles slowly on CPU; one shared block still has a bottleneck.
    cfg = dataclasses.replace(small_model(), dtype="bfloat16", depth=1, fusion_layer=0, share_encoder=True)
    # The seed's PRNG doesn't matter here, and unsafe_rbg's init program compiles ~3x faster on CPU.
    a = init_params(cfg, jax.random.key(0, impl="unsafe_rbg"))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(a))
    bottleneck = np.asarray(a["params"]["encoder"]["bottleneck"])
    assert bottleneck.shape == (1, cfg.num_bottlenecks, cfg.hidden_size)
    assert 0.0 < bottleneck.std() < 0.05  # N(0, 0.02)
    assert not np.any(a["params"]["head"]["kernel"])  # zero-initialised head


def _rgb_logit_grad_wrt_spectrogram(cfg, variables, inputs, jit):
    def rgb_logits(spec):
        return MBT(cfg).apply(variables, {**inputs, "spectrogram": spec})[1]["logits"]["rgb"].sum()

    return np.asarray(jit(jax.grad(rgb_logits))(inputs["spectrogram"]))


@pytest.mark.parametrize(
    "fusion, fusion_layer, flows",
    [
        ("bottleneck", 2, False),  # L_f = L: late fusion, RGB never sees the spectrogram
        ("self_attention", 1, True),
        # Bottleneck fusion does pass information (test_bottleneck_is_the_only_path_between_modalities);
        # it takes two fused layers: spectrogram -> z_fsn in one, z_fsn -> RGB in the next.
    ],
)
def test_rgb_logits_depend_on_spectrogram_only_when_fused(
    fusion, fusion_layer, flows, random_variables, random_inputs, fast_jit
):
    cfg = dataclasses.replace(small_model(), fusion=fusion, fusion_layer=fusion_layer)
    grad = _rgb_logit_grad_wrt_spectrogram(cfg, random_variables(cfg), random_inputs(cfg), fast_jit)
    if flows:
        assert np.abs(grad).max() > 1e-6
    else:
        assert not np.any(grad)  # exactly zero, not merely small


def test_bottleneck_is_the_only_path_between_modalities(random_variables, random_inputs, fast_jit):
    """Change the spectrogram but hold every bottleneck update fixed: the RGB stream must not move."""
    cfg = dataclasses.replace(small_model(), fusion="bottleneck", fusion_layer=0)  # every layer fused
    variables = random_variables(cfg)
    inputs = random_inputs(cfg)
    other = {**inputs, "spectrogram": random_inputs(cfg, seed=7)["spectrogram"]}

    def run(v, x, fixed):
        seen = {}

        def hold_fixed(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, FuseBottlenecks):
                seen[context.module.name] = out
                return fixed[context.module.name] if fixed else out
            return out

        with nn.intercept_methods(hold_fixed):
            _, inter = MBT(cfg).apply(v, x)
        return inter, seen

    run = fast_jit(run)
    base, fused = run(variables, inputs, None)
    assert sorted(fused) == ["fuse_0", "fuse_1"]
    moved, _ = run(variables, other, None)
    held, _ = run(variables, other, fused)
    rgb = lambda inter: np.asarray(inter["logits"]["rgb"])  # noqa: E731
    assert np.abs(rgb(moved) - rgb(base)).max() > 1e-4  # the spectrogram does reach RGB ...
    np.testing.assert_allclose(rgb(held), rgb(base), rtol=0, atol=1e-6)  # ... only through the bottlenecks
    np.testing.assert_allclose(held["pre_logits"]["rgb"], base["pre_logits"]["rgb"], rtol=0, atol=1e-6)


def test_dropout_and_stochastic_depth_are_on_in_training(random_variables, random_inputs, fast_jit):
    """(That they are off in eval mode is checked for every fusion strategy in test_forward_is_finite.)"""
    cfg = dataclasses.replace(small_model(), modalities=("rgb",), depth=1, fusion="none", dropout=0.3, stochastic_depth=0.5)
    variables, inputs = random_variables(cfg), random_inputs(cfg)
    apply = fast_jit(lambda v, x, key: MBT(cfg).apply(v, x, train=True, rngs={"dropout": key})[0])
    # Any key works; 'unsafe_rbg' compiles several times faster than threefry on CPU.
    k1, k2 = jax.random.key(1, impl="unsafe_rbg"), jax.random.key(2, impl="unsafe_rbg")
    assert np.abs(apply(variables, inputs, k1) - apply(variables, inputs, k2)).max() > 1e-4


def test_wrong_input_shapes_name_the_modality():
    cfg = small_model()
    variables = param_shapes(cfg)
    bad = {"rgb": jnp.zeros((1, 3, 32, 32, 3)), "spectrogram": jnp.zeros((1, 64, 128))}
    with pytest.raises(MBTError, match=r"input 'rgb' has shape \(1, 3, 32, 32, 3\).*num_frames"):
        jax.eval_shape(lambda v: MBT(cfg).apply(v, bad), variables)
    with pytest.raises(MBTError, match="lack.*spectrogram"):
        jax.eval_shape(lambda v: MBT(cfg).apply(v, {"rgb": bad["rgb"]}), variables)


def test_b16_parameter_counts():
    """Two-stream ViT-B/16 MBT matches the analytic count; a shared encoder has about half of it."""
    two_stream = ModelConfig(variant="B/16")  # 8 frames + 8 s, bottleneck L_f = 8, 527 classes
    shared = dataclasses.replace(two_stream, share_encoder=True)
    p_two, p_shared = param_shapes(two_stream), param_shapes(shared)
    n_two, n_shared = count_params(p_two), count_params(p_shared)
    assert n_two == analytic_params(two_stream) == 172_822_799
    assert n_shared == analytic_params(shared) == 87_766_799
    assert 0.45 < n_shared / n_two < 0.55
    # Less the 4 bottleneck tokens, the two-stream encoder is exactly twice the shared one.
    encoder = lambda p: count_params(p["params"]["encoder"]) - 4 * 768  # noqa: E731
    assert encoder(p_two) == 2 * encoder(p_shared)
