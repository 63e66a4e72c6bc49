"""Initialise MBT from a public ViT `.npz` checkpoint (google-research/vision_transformer format).

Every MBT run starts from ImageNet ViT weights. What goes where:
- every block of layer l (each stream's, the shared one, or a self-attention layer's) <- ViT layer l;
- every final LayerNorm <- `Transformer/encoder_norm`; every CLS token <- `cls`;
- RGB patch embedding <- `embedding` as is; tubelets get it on their central frame and zeros elsewhere
  (ViViT), so an initialised tubelet model sees the middle frame of each pair exactly as ViT would;
- spectrogram patch embedding <- `embedding/kernel` summed over its 3 input channels (AST), which is
  what scenic's tiling of the spectrogram to 3 channels computes;
- position embeddings: the 14x14 grid bilinearly resized to each modality's grid (scipy.ndimage.zoom,
  order 1, as the ViT code fine-tunes at new resolutions), tiled over frames for RGB;
- AST's layout (classifier 'ast', spectrogram_order 'frequency_major'), as AST starts from DeiT: the
  distillation token and its position start as the CLS's, and the spectrogram's frequency axis takes
  the image's rows (kernel and position grid transposed), so its tokens run row by row as AST's do;
- not loaded: the head (a new task), `pre_logits`, MBT's bottleneck tokens.

The checkpoint is a flat `np.savez` file with '/'-joined keys; both naming generations are read
(2020 release: LayerNorm_0 / MultiHeadDotProductAttention_1 / LayerNorm_2 / MlpBlock_3; newer:
LayerNorm_0 / MultiHeadDotProductAttention_0 / LayerNorm_1 / MlpBlock_0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from mbt.config import MBTError, ModelConfig

# Our block's submodules -> the checkpoint's, per naming generation.
BLOCK_NAMES = {
    "2020": {"attention_norm": "LayerNorm_0", "attention": "MultiHeadDotProductAttention_1",
             "mlp_norm": "LayerNorm_2", "mlp/hidden": "MlpBlock_3/Dense_0", "mlp/output": "MlpBlock_3/Dense_1"},
    "new": {"attention_norm": "LayerNorm_0", "attention": "MultiHeadDotProductAttention_0",
            "mlp_norm": "LayerNorm_1", "mlp/hidden": "MlpBlock_0/Dense_0", "mlp/output": "MlpBlock_0/Dense_1"},
}  # fmt: skip
_POSEMB = "Transformer/posembed_input/pos_embedding"
_MAX_LISTED = 40  # keys listed in an error before "... and N more"


def load_vit_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ViT `.npz` into {key: array} (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise MBTError(f"cannot read ViT checkpoint {os.fspath(path)!r}: {e} (expected an .npz from "
                       "google-research/vision_transformer, e.g. ViT-B_16.npz)") from None  # fmt: skip


def init_from_vit(
    params: Mapping, checkpoint: str | os.PathLike | Mapping[str, np.ndarray], config: ModelConfig
) -> dict:
    """Return a copy of `params` with the ViT weights put in place.

    `params` is either the variables from model.init ({'params': ...}) or their 'params' entry; the
    result has the same form. Raises MBTError listing every checkpoint key that is missing or whose
    shape does not fit.
    """
    if set(params) == {"params"}:
        return {"params": init_from_vit(params["params"], checkpoint, config)}
    ckpt = checkpoint if isinstance(checkpoint, Mapping) else load_vit_npz(checkpoint)
    source = os.fspath(checkpoint) if not isinstance(checkpoint, Mapping) else "<dict>"
    names = BLOCK_NAMES["2020" if any("MultiHeadDotProductAttention_1" in k for k in ckpt) else "new"]

    flat = flatten_dict(params, sep="/")
    if not any(p.startswith(("encoder/", "rgb_tokenizer/", "spectrogram_tokenizer/")) for p in flat):
        raise MBTError(f"init_from_vit needs MBT parameters, got a tree with {sorted(params)[:5]} at the top")
    missing, mismatched, out = [], {}, {}  # checkpoint key -> why, each reported once
    for path, value in flat.items():
        rule = _rule(path, names, config)
        if rule is None:  # head, bottleneck: keep their fresh initialisation
            out[path] = value
            continue
        key, transform = rule
        # The CLS position comes from a checkpoint trained with a CLS token.
        needed = [key, "cls"] if key == _POSEMB and config.num_prefix_tokens else [key]
        absent = [k for k in needed if k not in ckpt]
        if absent:
            missing += [k for k in absent if k not in missing]
            continue
        try:
            new = np.asarray(transform(ckpt), dtype=np.float32)
        except ValueError as e:
            mismatched.setdefault(key, f"{key} ({e})")
            continue
        if new.shape != tuple(value.shape):
            mismatched.setdefault(key, f"{key}: checkpoint gives {new.shape}, {path} needs {tuple(value.shape)}")
            continue
        out[path] = new.astype(value.dtype)
    if missing or mismatched:
        lines = [f"ViT checkpoint {source} does not fit this model ({config.variant}, depth {config.num_layers}, "
                 f"width {config.hidden_size}):"]  # fmt: skip
        if missing:
            lines.append(f"missing keys ({len(missing)}): " + _listing(sorted(missing)))
        if mismatched:
            lines.append(f"mismatched keys ({len(mismatched)}): " + _listing([mismatched[k] for k in sorted(mismatched)]))
        lines.append("use a ViT checkpoint of the same variant (depth >= the model's) or change --model.variant")
        raise MBTError("\n".join(lines))
    return unflatten_dict(out, sep="/")


def _rule(path: str, names: dict[str, str], config: ModelConfig):
    """(checkpoint key, ckpt -> array) for one of our parameters, or None when it is not loaded."""
    parts = path.split("/")
    if parts[0].endswith("_tokenizer"):
        modality = parts[0].removesuffix("_tokenizer")
        leaf = "/".join(parts[1:])
        if leaf == "embedding/kernel":
            return "embedding/kernel", lambda c: patch_kernel(c["embedding/kernel"], modality, config)
        if leaf in ("embedding/bias", "cls"):
            return leaf, lambda c: c[leaf]
        if leaf == "dist":  # AST's distillation token starts as the CLS
            return "cls", lambda c: c["cls"]
        if leaf == "pos_embedding":
            return _POSEMB, lambda c: _posemb(c, modality, config)
        return None
    if parts[0] != "encoder":
        return None  # heads are task-specific
    m = re.fullmatch(r"encoderblock_(\d+)(?:_\w+)?", parts[1])
    if m:
        sub = "/".join(parts[2:-1])  # e.g. attention/query, mlp/hidden, attention_norm
        top = sub.split("/")[0]
        theirs = names.get(sub) or (names[top] + sub[len(top):] if top in names else None)
        if theirs is None:
            return None
        key = f"Transformer/encoderblock_{m.group(1)}/{theirs}/{parts[-1]}"
        return key, lambda c: c[key]
    if parts[1].startswith("encoder_norm"):
        key = f"Transformer/encoder_norm/{parts[-1]}"
        return key, lambda c: c[key]
    return None  # the bottleneck tokens are MBT's own


def patch_kernel(kernel: np.ndarray, modality: str, config: ModelConfig) -> np.ndarray:
    """ViT's [p, p, 3, D] patch kernel, adapted to RGB patches, tubelets or 1-channel spectrograms."""
    if modality == "spectrogram":
        kernel = kernel.sum(axis=2, keepdims=True)
        # frequency-major (AST): the image's rows become frequency, our kernel's first axis is time
        return kernel.transpose(1, 0, 2, 3) if config.spectrogram_order == "frequency_major" else kernel
    if config.rgb_tokenizer == "tubelet":
        t = config.tubelet_frames
        out = np.zeros((t,) + kernel.shape, kernel.dtype)
        out[t // 2] = kernel
        return out
    return kernel


def _posemb(ckpt: Mapping[str, np.ndarray], modality: str, config: ModelConfig) -> np.ndarray:
    """ViT's [1, (1+)g*g, D] position embedding -> this modality's [1, (1+)N, D]."""
    posemb = ckpt[_POSEMB]
    has_cls = "cls" in ckpt  # a token-classifier ViT keeps the CLS position first
    cls_pos, grid = (posemb[:, :1], posemb[:, 1:]) if has_cls else (None, posemb)
    side = int(round(np.sqrt(grid.shape[1])))
    if side * side != grid.shape[1]:
        raise ValueError(f"position embedding {posemb.shape} is not a square grid")
    d = grid.shape[-1]
    grid = grid.reshape(side, side, d)
    target = config.rgb_grid[1:] if modality == "rgb" else config.spectrogram_grid
    if modality == "spectrogram" and config.spectrogram_order == "frequency_major":
        target = target[::-1]  # (frequency, time): flattened row by row, the tokens' order
    grid = resize_grid(grid, target).reshape(1, -1, d)
    if modality == "rgb":
        grid = np.tile(grid, (1, config.rgb_grid[0], 1))  # same spatial code for every frame
    if config.num_prefix_tokens:  # CLS (and the distillation token, which starts as the CLS)
        grid = np.concatenate([cls_pos] * config.num_prefix_tokens + [grid], axis=1)
    return grid


def resize_grid(grid: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a [h, w, D] grid of embeddings to [target_h, target_w, D] (corners aligned)."""
    if tuple(grid.shape[:2]) == tuple(target):
        return grid
    import scipy.ndimage  # only needed when the grid changes

    zoom = (target[0] / grid.shape[0], target[1] / grid.shape[1], 1)
    return scipy.ndimage.zoom(grid, zoom, order=1)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")
