"""The MBT model configuration: one frozen dataclass and a ViT variant table.

A config is plain data, checked when it is built, so a typo in a preset or on the command line fails
before any array is allocated. The named presets are whole training configs (mbt.train_config):

    cfg = get_config("mbt_base_audioset", ["model.fusion_layer=4", "model.modalities=rgb"]).model
    model = mbt.model.MBT(cfg)
"""

from __future__ import annotations

import dataclasses

# the toolkit's one user-error base (a leaf module of no imports; pyproject's import contract allows it)
from shards.format.errors import UserError

MODALITIES = ("rgb", "spectrogram")  # the order tokens are laid out in everywhere
FUSIONS = ("bottleneck", "self_attention", "cross_attention", "none")
CLASSIFIERS = ("token", "gap", "joint_gap", "ast")
PREFIX_TOKENS = {"token": 1, "gap": 0, "joint_gap": 0, "ast": 2}  # learned tokens before the patches: CLS (+ AST's distillation)
SPECTROGRAM_ORDERS = ("time_major", "frequency_major")
HEADS = ("multilabel", "multiclass", "verb_noun")
RGB_TOKENIZERS = ("patch2d", "tubelet")
DTYPES = ("float32", "bfloat16")

# name -> (depth, width, heads, mlp_dim); patch size is the number after the slash.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "Ti/16": (12, 192, 3, 768),
    "S/16": (12, 384, 6, 1536),
    "B/16": (12, 768, 12, 3072),
    "L/16": (24, 1024, 16, 4096),
}


class MBTError(UserError, ValueError):
    """A user-fixable MBT problem (config, override, input shape, checkpoint); the message says the fix."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the MBT model's parameters and computation."""

    # Size. `variant` picks depth/width/heads/mlp from VARIANTS; the four overrides below replace one
    # entry each (None: take the variant's), which is how the `tiny` preset's model is made.
    variant: str = "B/16"
    depth: int | None = None  # number of transformer layers L
    width: int | None = None  # token dimension D
    num_heads: int | None = None  # attention heads (width must divide by it)
    mlp_dim: int | None = None  # hidden size of each block's MLP

    # Inputs. They fix the position-embedding shapes, so they belong to the model, not only the data.
    modalities: tuple[str, ...] = ("rgb", "spectrogram")  # any non-empty subset of MODALITIES
    num_frames: int = 8  # RGB frames per clip, [B, F, S, S, 3]
    image_size: int = 224  # S: frames are square crops
    rgb_tokenizer: str = "patch2d"  # 16x16 patches per frame, or 'tubelet' (t x 16 x 16)
    tubelet_frames: int = 2  # t of a tubelet; F must be divisible by it
    spectrogram_frames: int = 800  # rows of the log-mel, 100 per second: 8 s -> 800 -> 50x8 patches
    num_mel_bins: int = 128  # columns of the log-mel
    spectrogram_stride: tuple[int, int] | None = None  # (time, frequency) patch stride; None: the patch
    #                                                     size (no overlap); AST: (10, 10), 6 bins of overlap
    spectrogram_order: str = "time_major"  # token order of the patch grid; AST's is 'frequency_major'

    # Fusion.
    fusion: str = "bottleneck"  # how streams meet from fusion_layer on; 'none' is late fusion
    fusion_layer: int = 8  # L_f: layers < L_f run per modality; L_f = depth is late fusion
    num_bottlenecks: int = 4  # B shared tokens ('bottleneck' fusion only)
    share_encoder: bool = False  # one set of block weights for both streams (about half the params)

    # Head.
    classifier: str = "token"  # pool each modality by its CLS token, 'gap' (mean of its tokens), or 'ast'
    #                            (tokens [cls, dist, patches], pooled as the mean of cls and dist: AST/DeiT)
    #                            'joint_gap': scenic's 'gap', one mean over both modalities' tokens, one head
    head_norm: bool = False  # a LayerNorm before the head's Dense (AST's mlp_head)
    head: str = "multilabel"  # sigmoid/BCE, 'multiclass' softmax/CE, or 'verb_noun' (two heads)
    num_classes: int = 527  # classes of the multilabel/multiclass head
    num_verb_classes: int = 97  # 'verb_noun' only (EPIC-Kitchens-100)
    num_noun_classes: int = 300  # 'verb_noun' only (EPIC-Kitchens-100)

    # Regularisation; all of it is off in eval mode (train=False).
    dropout: float = 0.0  # after embeddings, attention output and MLP layers
    attention_dropout: float = 0.0  # on the attention weights
    stochastic_depth: float = 0.0  # drop-path rate of the last layer; rises linearly from 0 at layer 0

    # Numerics that published weights were trained with (the defaults are ViT's).
    layer_norm_epsilon: float = 1e-6  # every block's and the final LayerNorm (Hugging Face's AST: 1e-12)
    head_norm_epsilon: float = 1e-5  # head_norm's (torch's default, AST's mlp_head; Hugging Face's AST: 1e-12)
    gelu_exact: bool = False  # the exact erf GELU (AST, DeiT) instead of the tanh approximation (ViT)

    dtype: str = "float32"  # compute dtype; parameters are always float32

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise MBTError(f"variant={self.variant!r}: choose one of {sorted(VARIANTS)}")
        # A tuple may arrive as a list (from json or a caller); freeze it so the config stays hashable.
        object.__setattr__(self, "modalities", tuple(self.modalities))
        _check_choice("fusion", self.fusion, FUSIONS)
        _check_choice("classifier", self.classifier, CLASSIFIERS)
        _check_choice("head", self.head, HEADS)
        _check_choice("rgb_tokenizer", self.rgb_tokenizer, RGB_TOKENIZERS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("spectrogram_order", self.spectrogram_order, SPECTROGRAM_ORDERS)
        if not self.modalities or len(set(self.modalities)) != len(self.modalities) or any(
            m not in MODALITIES for m in self.modalities
        ):
            raise MBTError(
                f"modalities={self.modalities!r}: give one or both of {MODALITIES}, each once"
            )
        # Tokens are always laid out rgb first, so sort into the canonical order.
        object.__setattr__(
            self, "modalities", tuple(m for m in MODALITIES if m in self.modalities)
        )
        for name in ("depth", "width", "num_heads", "mlp_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MBTError(f"{name}={value}: must be a positive integer (or None for the variant's)")
        if self.hidden_size % self.heads:
            raise MBTError(f"width {self.hidden_size} is not divisible by num_heads {self.heads}")
        if not 0 <= self.fusion_layer <= self.num_layers:
            raise MBTError(
                f"fusion_layer={self.fusion_layer}: must be in 0..{self.num_layers} (depth; = depth is late fusion)"
            )
        p = self.patch_size
        if self.image_size % p:
            raise MBTError(f"image_size={self.image_size} is not a multiple of the patch size {p}")
        if self.spectrogram_stride is None and (self.spectrogram_frames % p or self.num_mel_bins % p):
            raise MBTError(
                f"spectrogram {self.spectrogram_frames}x{self.num_mel_bins} is not a multiple of the patch size {p}"
            )
        if self.spectrogram_stride is not None:
            object.__setattr__(self, "spectrogram_stride", tuple(self.spectrogram_stride))
            if len(self.spectrogram_stride) != 2 or min(self.spectrogram_stride) < 1:
                raise MBTError(f"spectrogram_stride={self.spectrogram_stride}: give two positive integers "
                               "(time, frequency), or None for the patch size")
            if min(self.spectrogram_frames, self.num_mel_bins) < p:
                raise MBTError(f"spectrogram {self.spectrogram_frames}x{self.num_mel_bins} is smaller than one "
                               f"{p}x{p} patch")
        if not (self.layer_norm_epsilon > 0 and self.head_norm_epsilon > 0):
            raise MBTError("layer_norm_epsilon and head_norm_epsilon must be > 0")
        t = self.tubelet_frames if self.rgb_tokenizer == "tubelet" else 1
        if self.num_frames < 1 or self.num_frames % t:
            raise MBTError(f"num_frames={self.num_frames} must be a positive multiple of tubelet_frames={t}")
        if self.fusion == "bottleneck" and self.num_bottlenecks < 1 and self.fused_layers:
            raise MBTError("num_bottlenecks must be >= 1 for bottleneck fusion")
        for name in ("dropout", "attention_dropout", "stochastic_depth"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise MBTError(f"{name}={getattr(self, name)}: must be in [0, 1)")

    # --- Resolved sizes (the variant table plus overrides). ---
    @property
    def num_layers(self) -> int:
        return self.depth if self.depth is not None else VARIANTS[self.variant][0]

    @property
    def hidden_size(self) -> int:
        return self.width if self.width is not None else VARIANTS[self.variant][1]

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else VARIANTS[self.variant][2]

    @property
    def mlp_size(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else VARIANTS[self.variant][3]

    @property
    def patch_size(self) -> int:
        return int(self.variant.split("/")[1])

    # --- Derived geometry, shared by the model, the checkpoint loader, FLOPs and attention maps. ---
    @property
    def fused_layers(self) -> int:
        """How many layers (from the top) mix modalities; 0 for late fusion or a single modality."""
        if self.fusion == "none" or len(self.modalities) < 2:
            return 0
        return self.num_layers - self.fusion_layer

    @property
    def rgb_grid(self) -> tuple[int, int, int]:
        """(time, height, width) of the RGB token grid."""
        t = self.tubelet_frames if self.rgb_tokenizer == "tubelet" else 1
        g = self.image_size // self.patch_size
        return (self.num_frames // t, g, g)

    @property
    def spectrogram_grid(self) -> tuple[int, int]:
        """(time, frequency) of the spectrogram patch grid (whatever the tokens' order)."""
        p = self.patch_size
        st, sf = self.spectrogram_stride or (p, p)  # a VALID convolution: a partial last patch is dropped
        return ((self.spectrogram_frames - p) // st + 1, (self.num_mel_bins - p) // sf + 1)

    @property
    def num_prefix_tokens(self) -> int:
        """Learned tokens before each modality's patches: 1 (CLS), 0 (gap) or 2 (AST's CLS + distillation)."""
        return PREFIX_TOKENS[self.classifier]

    def num_tokens(self, modality: str) -> int:
        """Tokens of one modality entering the encoder, CLS (and distillation token) included."""
        grid = self.rgb_grid if modality == "rgb" else self.spectrogram_grid
        n = 1
        for g in grid:
            n *= g
        return n + self.num_prefix_tokens

    def input_shapes(self, batch_size: int = 1) -> dict[str, tuple[int, ...]]:
        """Shapes of the input dict the model takes, one entry per modality."""
        shapes = {
            "rgb": (batch_size, self.num_frames, self.image_size, self.image_size, 3),
            "spectrogram": (batch_size, self.spectrogram_frames, self.num_mel_bins),
        }
        return {m: shapes[m] for m in self.modalities}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise MBTError(f"{name}={value!r}: choose one of {list(choices)}")
