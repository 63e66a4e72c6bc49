"""Read published AST weights (the Audio Spectrogram Transformer, Gong et al. 2021) as MBT parameters.

    ckpt = read_ast("audioset_10_10_0.4593.pth")                 # the AST repository's state dict
    ckpt = read_ast("ast-finetuned-audioset-10-10-0.4593/")     # a Hugging Face ASTForAudioClassification
    cfg = ast_model_config(ckpt)                                # the audio-only MBT that computes it
    params = init_from_ast(params, "ast.pth", model_config)     # `--run.ast_checkpoint`: the audio stream

`mbt import ast` (mbt.ast_import) writes a checkpoint as a run directory.

Two formats, one architecture (a DeiT-distilled ViT over the log-mel):
- the AST repository's `torch.save`d state dict: `module.v.{cls_token, dist_token, pos_embed,
  patch_embed.proj, blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm}` and
  `module.mlp_head.{0: LayerNorm, 1: Linear}`. It is read with torch.load(weights_only=True) and never
  unpickled further: a file holding code or objects is refused. Its fused qkv matrix [3D, D] does not
  say how many heads it has (12 for AST's base model; `heads`), nor the grid its position embeddings
  cover: AST's defaults (128 mel bins, stride 10 both ways) unless told.
- a Hugging Face folder (config.json + model.safetensors, read without torch): the config states the
  grid, the heads and the LayerNorm epsilon (1e-12), the classes in id2label.

What each computes, and the MBT settings that reproduce it (`ast_model_config`): 16x16 patches at a
(frequency, time) stride of 10 over the [128, T] log-mel, tokens frequency-major after [cls, dist]
(spectrogram_order, classifier='ast'), exact-erf GELU, pre-LN blocks with LayerNorm eps 1e-6, the mean
of the cls and dist tokens after the final LayerNorm, then LayerNorm (torch's eps 1e-5) + Linear
(head_norm). Its features are Kaldi fbanks normalised (x + 4.2677393) / (4.5689974 * 2).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import warnings
from collections.abc import Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from mbt.config import VARIANTS, MBTError, ModelConfig

PATCH = 16  # AST's patch side (and every variant's here)
AST_DEFAULTS = {"mel_bins": 128, "frequency_stride": 10, "time_stride": 10}  # AST's published models
HEADS_BY_WIDTH = {d: h for _, d, h, _ in VARIANTS.values()}  # DeiT/ViT: 192 -> 3, 384 -> 6, 768 -> 12
_MAX_LISTED = 8  # keys named in an error


class ASTCheckpointError(MBTError):
    """An AST checkpoint that can't be read or doesn't fit; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class ASTCheckpoint:
    """An AST checkpoint in MBT's names and layouts, and what it says about its architecture."""

    source: str
    format: str  # "pth" (the AST repository) or "huggingface"
    params: dict[str, np.ndarray]  # flat '/'-joined paths of an audio-only MBT with classifier='ast'
    depth: int
    width: int
    heads: int
    mlp_dim: int
    grid: tuple[int, int]  # (frequency, time) patches its position embeddings cover
    stride: tuple[int, int]  # (frequency, time)
    mel_bins: int
    frames: int  # input spectrogram rows (100 per second)
    layer_norm_epsilon: float
    head_norm_epsilon: float
    gelu_exact: bool
    classes: list[str] | None  # the head's class names, when the checkpoint states them
    num_classes: int  # 0: no head (a Hugging Face ASTModel)
    head: str | None = None  # "multilabel" / "multiclass" when the checkpoint says (HF problem_type)


# ---------------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------------
def read_ast(path: str, *, heads: int | None = None, frames: int | None = None, mel_bins: int | None = None,
             frequency_stride: int | None = None, time_stride: int | None = None) -> ASTCheckpoint:
    """A .pth state dict of the AST repository, or a Hugging Face folder, read into MBT's names.

    heads / mel_bins / strides: what a .pth does not state (a Hugging Face config.json states them all).
    frames: the input length; None: the multiple of 16 rows whose patches fill the position grid (AST's
    1024, 512, 128), else the shortest."""
    from shards.format import storage

    path = os.fspath(path)
    if storage.isdir(path):
        given = {"--mel-bins": mel_bins, "--frequency-stride": frequency_stride, "--time-stride": time_stride}
        if any(v is not None for v in given.values()):
            flags = ", ".join(k for k, v in given.items() if v is not None)
            raise ASTCheckpointError(f"{path}: a Hugging Face folder's config.json states the grid; {flags}: "
                                     "for .pth checkpoints only")
        return _read_huggingface(path, heads=heads, frames=frames)
    mel_bins = mel_bins or AST_DEFAULTS["mel_bins"]
    stride = (frequency_stride or AST_DEFAULTS["frequency_stride"], time_stride or AST_DEFAULTS["time_stride"])
    return _read_pth(path, heads=heads, frames=frames, mel_bins=mel_bins, stride=stride)


def _read_pth(path: str, *, heads, frames, mel_bins, stride) -> ASTCheckpoint:
    sd = {k.removeprefix("module."): v for k, v in load_state_dict(path).items()}
    need = ["v.cls_token", "v.dist_token", "v.pos_embed", "v.patch_embed.proj.weight", "v.patch_embed.proj.bias",
            "v.norm.weight", "v.norm.bias", "v.blocks.0.attn.qkv.weight"]
    _require(path, sd, need, "the AST repository's state dict (module.v.*, module.mlp_head.*)")
    depth = _count_layers(sd, r"v\.blocks\.(\d+)\.attn\.qkv\.weight")
    width = sd["v.cls_token"].shape[-1]
    _require(path, sd, [f"v.blocks.{i}.{n}.{w}" for i in range(depth) for n in
                        ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for w in ("weight", "bias")],
             "the AST repository's state dict")  # fmt: skip
    heads = _heads(path, width, heads)
    weights = {"cls": sd["v.cls_token"], "dist": sd["v.dist_token"], "pos": sd["v.pos_embed"],
               "patch": sd["v.patch_embed.proj.weight"], "patch_bias": sd["v.patch_embed.proj.bias"],
               "norm": (sd["v.norm.weight"], sd["v.norm.bias"])}
    for i in range(depth):
        b = f"v.blocks.{i}."
        if sd[b + "attn.qkv.weight"].shape != (3 * width, width) or sd[b + "attn.qkv.bias"].shape != (3 * width,):
            raise ASTCheckpointError(f"{path}: {b}attn.qkv is {sd[b + 'attn.qkv.weight'].shape}, not [3D, D] for "
                                     f"the width D={width} of its tokens; is the file complete and unmodified?")
        q, k, v = np.split(sd[b + "attn.qkv.weight"], 3, axis=0)  # rows: (q|k|v, head, head_dim)
        qb, kb, vb = np.split(sd[b + "attn.qkv.bias"], 3)
        weights[i] = {"norm1": (sd[b + "norm1.weight"], sd[b + "norm1.bias"]), "query": (q, qb), "key": (k, kb),
                      "value": (v, vb), "out": (sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"]),
                      "norm2": (sd[b + "norm2.weight"], sd[b + "norm2.bias"]),
                      "fc1": (sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]),
                      "fc2": (sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])}  # fmt: skip
    if "mlp_head.1.weight" in sd:
        _require(path, sd, ["mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.bias"], "AST's mlp_head")
        weights["head_norm"] = (sd["mlp_head.0.weight"], sd["mlp_head.0.bias"])
        weights["head"] = (sd["mlp_head.1.weight"], sd["mlp_head.1.bias"])
    grid = _grid(path, weights, mel_bins, stride[0], "pass --mel-bins / --frequency-stride")
    return _checkpoint(path, "pth", weights, depth=depth, width=width, heads=heads, grid=grid, stride=stride,
                       mel_bins=mel_bins, frames=frames, eps=1e-6, head_eps=1e-5, gelu_exact=True, classes=None,
                       head_kind=None)  # fmt: skip


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch.save'd dict of tensors as float32 numpy arrays, loaded with weights_only=True: a file that
    needs anything else to load (code, objects) is refused, never unpickled."""
    import pickle

    import torch

    from shards.format import storage

    data = io.BytesIO(storage.read_bytes(path))
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it reads anyway
            warnings.simplefilter("ignore")
            sd = torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e.__context__ or e).strip().splitlines()[0][:200]
        raise ASTCheckpointError(f"{path}: refusing to unpickle: it holds code or objects, not only tensors "
                                 f"({why}); a checkpoint of AST is a plain state dict") from None
    except Exception as e:  # torch's zip reader and unpickler fail in many ways on a damaged file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ASTCheckpointError(f"{path}: not a complete torch checkpoint ({why}); is it truncated? "
                                 "download it again") from None
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ASTCheckpointError(f"{path}: holds a {type(sd).__name__}, not a state dict of tensors "
                                 "(is it an AST checkpoint?)")
    return {str(k): v.detach().float().numpy() for k, v in sd.items()}


_HF_BLOCK = {  # our block part -> Hugging Face's names (the saved ones, then transformers 5's own)
    "norm1": ("layernorm_before",), "norm2": ("layernorm_after",),
    "query": ("attention.attention.query", "attention.q_proj"), "key": ("attention.attention.key", "attention.k_proj"),
    "value": ("attention.attention.value", "attention.v_proj"), "out": ("attention.output.dense", "attention.o_proj"),
    "fc1": ("intermediate.dense", "mlp.fc1"), "fc2": ("output.dense", "mlp.fc2"),
}  # fmt: skip


def _read_huggingface(folder: str, *, heads, frames) -> ASTCheckpoint:
    from shards.format import storage

    try:
        config = json.loads(storage.read_bytes(storage.join(folder, "config.json")))
    except FileNotFoundError:
        raise ASTCheckpointError(f"{folder}: a folder without config.json; give a Hugging Face model folder "
                                 "(save_pretrained) or an AST .pth file") from None
    except ValueError as e:
        raise ASTCheckpointError(f"{folder}/config.json: not JSON ({e})") from None
    if config.get("model_type") != "audio-spectrogram-transformer":
        raise ASTCheckpointError(f"{folder}: a Hugging Face {config.get('model_type')!r} model, not an "
                                 "audio-spectrogram-transformer (AST)")
    sd = {k.removeprefix("audio_spectrogram_transformer."): v for k, v in _read_safetensors(folder).items()}
    e = "embeddings."
    _require(folder, sd, [e + "cls_token", e + "distillation_token", e + "position_embeddings",
                          e + "patch_embeddings.projection.weight", "layernorm.weight"], "ASTModel's weights")
    depth = _count_layers(sd, r"encoder\.layer\.(\d+)\.layernorm_before\.weight")
    weights = {"cls": sd[e + "cls_token"], "dist": sd[e + "distillation_token"], "pos": sd[e + "position_embeddings"],
               "patch": sd[e + "patch_embeddings.projection.weight"],
               "patch_bias": sd[e + "patch_embeddings.projection.bias"],
               "norm": (sd["layernorm.weight"], sd["layernorm.bias"])}  # fmt: skip
    for i in range(depth):
        weights[i] = {}
        for ours, names in _HF_BLOCK.items():
            name = next((f"encoder.layer.{i}.{n}" for n in names if f"encoder.layer.{i}.{n}.weight" in sd),
                        f"encoder.layer.{i}.{names[0]}")  # fmt: skip
            _require(folder, sd, [name + ".weight"], "ASTModel's weights")
            w = sd[name + ".weight"]
            weights[i][ours] = (w, sd.get(name + ".bias", np.zeros(w.shape[0], np.float32)))  # qkv_bias=False
    if "classifier.dense.weight" in sd:
        _require(folder, sd, ["classifier.layernorm.weight", "classifier.layernorm.bias", "classifier.dense.bias"],
                 "ASTForAudioClassification's classifier")
        weights["head_norm"] = (sd["classifier.layernorm.weight"], sd["classifier.layernorm.bias"])
        weights["head"] = (sd["classifier.dense.weight"], sd["classifier.dense.bias"])
    width = int(config.get("hidden_size", weights["cls"].shape[-1]))
    if heads is not None and heads != config.get("num_attention_heads"):
        raise ASTCheckpointError(f"{folder}: config.json says num_attention_heads="
                                 f"{config.get('num_attention_heads')}; leave out --heads")
    heads = _heads(folder, width, config.get("num_attention_heads"))
    patch = config.get("patch_size", PATCH)
    if patch not in (PATCH, [PATCH, PATCH]):
        raise ASTCheckpointError(f"{folder}: patch_size {patch}; only {PATCH}x{PATCH} patches are supported")
    act = config.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ASTCheckpointError(f"{folder}: hidden_act {act!r}; only GELU (exact or tanh) is supported")
    mel_bins, stride = int(config.get("num_mel_bins", 128)), (int(config["frequency_stride"]), int(config["time_stride"]))
    grid = _grid(folder, weights, mel_bins, stride[0], "config.json's num_mel_bins / frequency_stride")
    max_length = int(config.get("max_length", 0)) or None
    classes = _hf_classes(config, weights)
    problem = config.get("problem_type")
    head = {"multi_label_classification": "multilabel", "single_label_classification": "multiclass"}.get(problem)
    eps = float(config.get("layer_norm_eps", 1e-12))
    return _checkpoint(folder, "huggingface", weights, depth=depth, width=width, heads=heads, grid=grid,
                       stride=stride, mel_bins=mel_bins, frames=frames or max_length, eps=eps, head_eps=eps,
                       gelu_exact=act == "gelu", classes=classes, head_kind=head)  # fmt: skip


def _read_safetensors(folder: str) -> dict[str, np.ndarray]:
    """model.safetensors (or the shards its index names), with safetensors' numpy reader."""
    from safetensors.numpy import load as load_bytes

    from shards.format import storage

    index = storage.join(folder, "model.safetensors.index.json")
    try:
        names = sorted(set(json.loads(storage.read_bytes(index))["weight_map"].values()))
    except FileNotFoundError:
        names = ["model.safetensors"]
    except (ValueError, KeyError, AttributeError) as e:
        raise ASTCheckpointError(f"{index}: not a safetensors index ({e})") from None
    out = {}
    for name in names:
        path = storage.join(folder, name)
        try:
            data = storage.read_bytes(path)
        except FileNotFoundError:
            raise ASTCheckpointError(f"{folder}: no {name} (save the model with safetensors: "
                                     "save_pretrained(..., safe_serialization=True))") from None
        try:
            out.update({k: np.asarray(v, np.float32) for k, v in load_bytes(data).items()})
        except Exception as e:  # safetensors' own error type (a Rust panic on some damage)
            raise ASTCheckpointError(f"{path}: not a readable safetensors file ({str(e)[:200]}); "
                                     "is it truncated?") from None
    return out


def _hf_classes(config: dict, weights: dict) -> list[str] | None:
    labels = config.get("id2label") or {}
    n = weights["head"][0].shape[0] if "head" in weights else 0
    names = [labels.get(str(i)) for i in range(n)]
    if n == 0 or None in names or names == [f"LABEL_{i}" for i in range(n)]:
        return None
    return names


def _require(source: str, sd: Mapping, keys: list[str], what: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        have = ", ".join(sorted(sd)[:_MAX_LISTED]) or "nothing"
        raise ASTCheckpointError(f"{source} is not an AST checkpoint: it lacks {', '.join(missing[:_MAX_LISTED])}"
                                 f"{' ...' if len(missing) > _MAX_LISTED else ''} (expected {what}; it holds "
                                 f"{have}{' ...' if len(sd) > _MAX_LISTED else ''})")


def _count_layers(sd: Mapping, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, k))}
    return max(found) + 1 if found else 0


def _heads(source: str, width: int, heads: int | None) -> int:
    if heads is None:
        if width not in HEADS_BY_WIDTH:
            raise ASTCheckpointError(f"{source}: width {width}, and the heads can't be read from the weights; "
                                     f"pass --heads N (AST's models: {HEADS_BY_WIDTH})")
        heads = HEADS_BY_WIDTH[width]
    if heads < 1 or width % heads:
        raise ASTCheckpointError(f"{source}: width {width} does not divide into {heads} heads; check --heads")
    return int(heads)


def _grid(source: str, weights: dict, mel_bins: int, frequency_stride: int, fix: str) -> tuple[int, int]:
    """(frequency, time) patches of the position embeddings, from the number of them and the bins."""
    patch = weights["patch"]
    if patch.ndim != 4 or patch.shape[1:] != (1, PATCH, PATCH):
        raise ASTCheckpointError(f"{source}: a patch embedding of shape {patch.shape}; AST's is [D, 1, {PATCH}, "
                                 f"{PATCH}] (one-channel 16x16 patches): is it an image ViT?")
    n = weights["pos"].shape[1] - 2
    f = (mel_bins - PATCH) // frequency_stride + 1 if mel_bins >= PATCH and frequency_stride > 0 else 0
    if f < 1 or n % f:
        raise ASTCheckpointError(f"{source}: {n} position embeddings don't form rows of {f} frequency patches "
                                 f"({mel_bins} bins at stride {frequency_stride}); {fix}")
    return f, n // f


def _checkpoint(source, fmt, w, *, depth, width, heads, grid, stride, mel_bins, frames, eps, head_eps,
                gelu_exact, classes, head_kind) -> ASTCheckpoint:
    """The checkpoint from torch-layout weights `w` and what its format states."""
    if depth < 1:
        raise ASTCheckpointError(f"{source} is not an AST checkpoint: it has no transformer blocks")
    f, t = grid
    shortest = (t - 1) * stride[1] + PATCH  # fewest rows that give t patches; up to stride - 1 more do too
    if frames is None:
        frames = next((n for n in range(shortest, shortest + stride[1]) if n % 16 == 0), shortest)
    elif (frames - PATCH) // stride[1] + 1 != t:
        raise ASTCheckpointError(f"{source}: {frames} frames make {(frames - PATCH) // stride[1] + 1} time "
                                 f"patches, its position embeddings have {t}; use --frames from {shortest} to "
                                 f"{shortest + stride[1] - 1}")
    try:
        p = _params(w, depth, width, heads)
    except (ValueError, IndexError) as e:  # a layer of another size than the first
        raise ASTCheckpointError(f"{source}: weights of shapes that don't fit one AST ({e}); is the file "
                                 "complete and unmodified?") from None
    head = w.get("head")
    return ASTCheckpoint(source=source, format=fmt, params=p, depth=depth, width=width, heads=heads,
                         mlp_dim=w[0]["fc1"][0].shape[0], grid=grid, stride=tuple(stride), mel_bins=mel_bins,
                         frames=frames, layer_norm_epsilon=eps, head_norm_epsilon=head_eps, gelu_exact=gelu_exact,
                         classes=classes, num_classes=0 if head is None else head[0].shape[0],
                         head=head_kind)  # fmt: skip


def _params(w: dict, depth: int, width: int, heads: int) -> dict[str, np.ndarray]:
    """Torch layouts (Linear [out, in], Conv [D, 1, f, t], fused heads) -> MBT's names and layouts."""
    hd = width // heads
    tok, p = "spectrogram_tokenizer/", {}
    p[tok + "embedding/kernel"] = w["patch"].transpose(3, 2, 1, 0)  # [D, 1, f, t] -> [t, f, 1, D]: ours is time-first
    p[tok + "embedding/bias"] = w["patch_bias"]
    p[tok + "cls"], p[tok + "dist"], p[tok + "pos_embedding"] = w["cls"], w["dist"], w["pos"]  # frequency-major
    for i in range(depth):
        b, blk = f"encoder/encoderblock_{i}/", w[i]
        for ours, theirs in (("attention_norm", "norm1"), ("mlp_norm", "norm2")):
            p[b + ours + "/scale"], p[b + ours + "/bias"] = blk[theirs]
        for name in ("query", "key", "value"):
            weight, bias = blk[name]
            p[b + f"attention/{name}/kernel"] = weight.T.reshape(width, heads, hd)
            p[b + f"attention/{name}/bias"] = bias.reshape(heads, hd)
        p[b + "attention/out/kernel"] = blk["out"][0].T.reshape(heads, hd, width)
        p[b + "attention/out/bias"] = blk["out"][1]
        for ours, theirs in (("hidden", "fc1"), ("output", "fc2")):
            p[b + f"mlp/{ours}/kernel"], p[b + f"mlp/{ours}/bias"] = blk[theirs][0].T, blk[theirs][1]
    p["encoder/encoder_norm/scale"], p["encoder/encoder_norm/bias"] = w["norm"]
    if "head" in w:
        p["head_norm/scale"], p["head_norm/bias"] = w["head_norm"]
        p["head/kernel"], p["head/bias"] = w["head"][0].T, w["head"][1]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in p.items()}


# ---------------------------------------------------------------------------------------------------
# The model that computes what AST computes.
# ---------------------------------------------------------------------------------------------------
def ast_model_config(ckpt: ASTCheckpoint, head: str = "multilabel") -> ModelConfig:
    """An audio-only MBT that is the checkpoint's AST: its sizes, grid, token layout, head and numerics."""
    variant = next((name for name, (_, d, _, _) in VARIANTS.items() if d == ckpt.width), "B/16")
    return ModelConfig(
        variant=variant, depth=ckpt.depth, width=ckpt.width, num_heads=ckpt.heads, mlp_dim=ckpt.mlp_dim,
        modalities=("spectrogram",), spectrogram_frames=ckpt.frames, num_mel_bins=ckpt.mel_bins,
        spectrogram_stride=(ckpt.stride[1], ckpt.stride[0]), spectrogram_order="frequency_major",
        fusion="none", fusion_layer=ckpt.depth, classifier="ast", head_norm=True, head=head,
        num_classes=ckpt.num_classes, layer_norm_epsilon=ckpt.layer_norm_epsilon,
        head_norm_epsilon=ckpt.head_norm_epsilon, gelu_exact=ckpt.gelu_exact,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# `--run.ast_checkpoint`: an MBT's spectrogram stream from AST.
# ---------------------------------------------------------------------------------------------------
def init_from_ast(params: Mapping, checkpoint: str, config: ModelConfig) -> dict:
    """A copy of `params` ({'params': ...} or its entry) whose spectrogram stream is the AST's.

    Loaded: the patch embedding, CLS (and the distillation token for classifier='ast'), the position
    embeddings (cut from the middle or bilinearly stretched to the model's grid, per axis, as AST adapts
    them to another clip length), layer l's spectrogram block <- AST block l, the spectrogram's final
    LayerNorm. Left as they are: blocks and norms the spectrogram shares with RGB (share_encoder,
    self-attention layers: those are ViT's), the head (a new task). A .pth is read with the model's
    heads and AST's grid defaults (128 bins, stride 10)."""
    if set(params) == {"params"}:
        return {"params": init_from_ast(params["params"], checkpoint, config)}
    if "spectrogram" not in config.modalities:
        raise ASTCheckpointError("--run.ast_checkpoint initialises the spectrogram stream; the model has none")
    ckpt = read_ast(checkpoint, heads=config.heads if not _is_folder(checkpoint) else None)
    wrong = [f"{name} {theirs} (the model's: {ours})" for name, theirs, ours in (
        ("width", ckpt.width, config.hidden_size), ("mlp_dim", ckpt.mlp_dim, config.mlp_size),
        ("heads", ckpt.heads, config.heads)) if theirs != ours]  # fmt: skip
    if ckpt.depth < config.num_layers:
        wrong.append(f"depth {ckpt.depth} (the model's: {config.num_layers})")
    if wrong:
        raise ASTCheckpointError(f"{checkpoint}: an AST of {', '.join(wrong)}; set --model.width / num_heads / "
                                 "mlp_dim / depth to match (or use a matching checkpoint)")
    src, out = ckpt.params, flatten_dict(params, sep="/")
    separate = len(config.modalities) > 1 and not config.share_encoder
    first_joint = config.num_layers - config.fused_layers if config.fusion == "self_attention" else config.num_layers
    mine = {}  # our parameter path -> the AST's
    tok = "spectrogram_tokenizer/"
    for leaf in ("embedding/kernel", "embedding/bias", "cls", "dist"):
        if tok + leaf in out:
            mine[tok + leaf] = tok + leaf
    if separate or len(config.modalities) == 1:
        suffix = "_spectrogram" if separate else ""
        for key in src:
            m = re.fullmatch(r"encoder/encoderblock_(\d+)/(.*)", key)
            if m and int(m.group(1)) < first_joint:
                mine[f"encoder/encoderblock_{m.group(1)}{suffix}/{m.group(2)}"] = key
            elif key.startswith("encoder/encoder_norm/"):
                mine[key.replace("encoder_norm", "encoder_norm" + suffix)] = key
    for ours, theirs in mine.items():
        out[ours] = src[theirs].astype(np.asarray(out[ours]).dtype)
    out[tok + "pos_embedding"] = _posemb(ckpt, config).astype(np.asarray(out[tok + "pos_embedding"]).dtype)
    return unflatten_dict(out, sep="/")


def _is_folder(path: str) -> bool:
    from shards.format import storage

    return storage.isdir(os.fspath(path))


def _posemb(ckpt: ASTCheckpoint, config: ModelConfig) -> np.ndarray:
    """AST's [1, 2 + F*T, D] position embeddings -> the model's [1, prefix + N, D] (grid and order)."""
    pos = ckpt.params["spectrogram_tokenizer/pos_embedding"]
    d = pos.shape[-1]
    grid = pos[0, 2:].reshape(ckpt.grid + (d,))  # [F, T, D]: AST's tokens are frequency-major
    t, f = config.spectrogram_grid
    grid = fit_axis(fit_axis(grid, t, axis=1), f, axis=0)
    if config.spectrogram_order == "time_major":
        grid = grid.transpose(1, 0, 2)
    prefix = pos[0, : config.num_prefix_tokens]  # cls (and dist) positions, when the model has them
    return np.concatenate([prefix, grid.reshape(-1, d)])[None]


def fit_axis(grid: np.ndarray, size: int, axis: int) -> np.ndarray:
    """AST's adaptation of its position grid along one axis: the middle `size` entries when shorter,
    linear interpolation (torch's bilinear, align_corners=False) when longer."""
    n = grid.shape[axis]
    if size <= n:
        start = n // 2 - size // 2
        return np.take(grid, np.arange(start, start + size), axis=axis)
    f32 = np.float32  # torch computes the source positions in float32
    src = np.maximum((np.arange(size, dtype=f32) + f32(0.5)) * f32(n / size) - f32(0.5), f32(0))
    lo = np.minimum(np.floor(src).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = src - lo.astype(f32)
    shape = [1] * grid.ndim
    shape[axis] = size
    w = w.reshape(shape)
    return np.take(grid, lo, axis=axis) * (1 - w) + np.take(grid, hi, axis=axis) * w
