"""What an MBT model costs: parameters and forward FLOPs per clip, from XLA and from the formula.

The analytic count is the matmuls (one multiply-add = 2 FLOPs). A block whose Nq query tokens attend
to Nk key tokens costs

    4*Nq*D^2 (Q, out) + 4*Nk*D^2 (K, V) + 4*Nq*D*M (MLP) + 4*Nq*Nk*D (QK^T, AV),

which for self-attention (Nq = Nk = N, M = 4D) is the familiar 24*N*D^2 + 4*N^2*D per layer. Per layer:
separate streams sum it over modalities with Nq = Nk = N_m; `bottleneck` with N_m + B; one joint
`self_attention` block with N = sum N_m; `cross_attention` with Nq = N_m, Nk = N (each modality's keys and
values are all tokens, projected with its own weights). Patch embeddings and the head are added.
XLA's number (`jit(...).lower(...).compile().cost_analysis()`) also counts softmax, LayerNorm and GELU,
a few percent at B/16.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator

from mbt.config import ModelConfig


# ----------------------------------------------------------------------------------------------------
# Parameters.
# ----------------------------------------------------------------------------------------------------


def patch_inputs(config: ModelConfig, modality: str) -> int:
    """Input values per token of a modality: 16x16 (x3 colours, x tubelet frames for RGB)."""
    p = config.patch_size
    values = p * p * (1 if modality == "spectrogram" else 3)
    if modality == "rgb" and config.rgb_tokenizer == "tubelet":
        values *= config.tubelet_frames
    return values


def analytic_params(config: ModelConfig) -> int:
    """Parameter count from the architecture, without building the model."""
    d, mlp = config.hidden_size, config.mlp_size
    block = 4 * d * d + 4 * d + 2 * 2 * d + 2 * d * mlp + mlp + d  # attention + 2 LayerNorms + MLP
    prefix = config.num_prefix_tokens  # CLS (and AST's distillation token)
    total = 0
    for m in config.modalities:
        total += patch_inputs(config, m) * d + d + prefix * d + config.num_tokens(m) * d  # kernel, bias, CLS, posemb
    separate = len(config.modalities) > 1 and not config.share_encoder
    first_fused = config.num_layers - config.fused_layers
    for layer in range(config.num_layers):
        joint = layer >= first_fused and config.fusion == "self_attention"
        total += block * (len(config.modalities) if separate and not joint else 1)
    total += 2 * d * (len(config.modalities) if separate else 1)  # final LayerNorms
    if config.fusion == "bottleneck" and config.fused_layers:
        total += config.num_bottlenecks * d
    classes = config.num_verb_classes + config.num_noun_classes if config.head == "verb_noun" else config.num_classes
    total += 2 * d if config.head_norm else 0
    return total + (d + 1) * classes


def xla_params(config: ModelConfig) -> int:
    """Parameter count of the built model (jax.eval_shape: nothing is allocated)."""
    from mbt.model import count_params, param_shapes

    return count_params(param_shapes(config))


# ----------------------------------------------------------------------------------------------------
# FLOPs.
# ----------------------------------------------------------------------------------------------------


def block_flops(num_queries: int, num_keys: int, width: int, mlp_dim: int) -> int:
    """Matmul FLOPs of one pre-LN block whose queries attend to `num_keys` tokens."""
    d = width
    return 4 * num_queries * d * d + 4 * num_keys * d * d + 4 * num_queries * d * mlp_dim + 4 * num_queries * num_keys * d


def analytic_flops(config: ModelConfig) -> int:
    """Forward FLOPs of one clip: patch embeddings + every layer's blocks + the head(s)."""
    d, mlp = config.hidden_size, config.mlp_size
    n = {m: config.num_tokens(m) for m in config.modalities}
    total = 0
    for m in config.modalities:
        total += 2 * (n[m] - config.num_prefix_tokens) * patch_inputs(config, m) * d
    first_fused = config.num_layers - config.fused_layers
    n_all, b = sum(n.values()), config.num_bottlenecks
    for layer in range(config.num_layers):
        if layer < first_fused:
            total += sum(block_flops(n[m], n[m], d, mlp) for m in n)
        elif config.fusion == "bottleneck":
            total += sum(block_flops(n[m] + b, n[m] + b, d, mlp) for m in n)
        elif config.fusion == "self_attention":
            total += block_flops(n_all, n_all, d, mlp)
        else:  # cross_attention
            total += sum(block_flops(n[m], n_all, d, mlp) for m in n)
    classes = config.num_verb_classes + config.num_noun_classes if config.head == "verb_noun" else config.num_classes
    return total + 2 * d * classes * len(n)


def xla_flops(config: ModelConfig) -> float:
    """Forward FLOPs of one clip (batch 1, eval mode) from XLA's cost analysis of the compiled model."""
    return _xla_flops(_canonical(config))


@functools.lru_cache(maxsize=None)
def _xla_flops(config: ModelConfig) -> float:
    import jax
    import jax.numpy as jnp

    from mbt.model import MBT, param_shapes

    inputs = {m: jax.ShapeDtypeStruct(s, jnp.float32) for m, s in config.input_shapes(1).items()}
    lowered = jax.jit(lambda v, x: MBT(config).apply(v, x)[0]).lower(param_shapes(config), inputs)
    # The program never runs, so skip LLVM's optimisation of it on CPU (half the compile time); the cost
    # analysis runs on the optimised HLO, before LLVM, and is the same either way.
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    cost = lowered.compile(compiler_options=fast if jax.default_backend() == "cpu" else None).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax returned one dict per device
    return float(cost["flops"])


def _canonical(config: ModelConfig) -> ModelConfig:
    """One config per distinct graph: every strategy at L_f = L is the same late-fusion model."""
    if config.fused_layers == 0:
        return dataclasses.replace(config, fusion="none", fusion_layer=config.num_layers)
    return config


# ----------------------------------------------------------------------------------------------------
# The table `mbt flops` prints (the compute half of the paper's Figure 3).
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlopsRow:
    """One model variant's cost."""

    fusion: str  # fusion strategy
    fusion_layer: int  # L_f
    params: int  # parameters of the built model
    analytic_gflops: float  # forward GFLOPs per clip from the formula
    xla_gflops: float | None  # forward GFLOPs per clip from XLA (None when not computed)


def flops_rows(
    config: ModelConfig, fusions: Iterable[str], fusion_layers: Iterable[int], *, xla: bool = True
) -> Iterator[FlopsRow]:
    """One row per (fusion, L_f), computed lazily so a caller can print each as it arrives."""
    fusion_layers = list(fusion_layers)
    for fusion in fusions:
        for lf in fusion_layers:
            cfg = dataclasses.replace(config, fusion=fusion, fusion_layer=lf)
            yield FlopsRow(
                fusion=fusion, fusion_layer=lf, params=xla_params(cfg) if xla else analytic_params(cfg),
                analytic_gflops=analytic_flops(cfg) / 1e9, xla_gflops=xla_flops(cfg) / 1e9 if xla else None,
            )  # fmt: skip


HEADER = f"{'fusion':<16} {'L_f':>4} {'params (M)':>11} {'GFLOPs XLA':>11} {'GFLOPs analytic':>16} {'XLA/analytic':>13}"


def format_row(row: FlopsRow) -> str:
    xla = f"{_gflops(row.xla_gflops):>11}" if row.xla_gflops is not None else f"{'-':>11}"
    ratio = f"{row.xla_gflops / row.analytic_gflops:13.3f}" if row.xla_gflops is not None else f"{'-':>13}"
    return f"{row.fusion:<16} {row.fusion_layer:>4} {row.params / 1e6:11.2f} {xla} {_gflops(row.analytic_gflops):>16} {ratio}"


def _gflops(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"  # B/16 reads 435.3, the tiny test model 0.00123


def format_table(rows: Iterable[FlopsRow]) -> str:
    return "\n".join([HEADER, "-" * len(HEADER)] + [format_row(r) for r in rows])
