"""A scenic MBT checkpoint (google-research/scenic, scenic/projects/mbt) as a run directory.

    cfg, step = import_scenic("gs://B/mbt_as/checkpoint_500000", "runs/as500k", fusion_layer=8, classes=names)
    # then mbt eval / predict / report on runs/as500k, or mbt train --run.init_from=runs/as500k

scenic saves Flax msgpack files: `{global_step, optimizer: {target: PARAMS, state}, ...}` (its 2021-22
releases, flax.optim) or `{global_step, params: PARAMS, opt_state, ...}` (today). The file is streamed:
PARAMS and the step are read, everything else (the optimiser's momentum: as large as PARAMS) is
skipped without being built.

What the weights say (the ModelConfig):
- modalities: `embedding` (RGB) and `embedding_spectrogram`; RGB patches per frame from a rank-4 kernel
  [16,16,3,D], tubelets from a rank-5 one [t,16,16,3,D];
- width D, depth (`encoderblock_{l}`), heads (query kernels [D, H, D/H]), MLP width (`Dense_0`);
- frames and spectrogram rows: the lengths of the position embeddings (a length alone can't tell
  frames from frame size, nor rows from mel bins: 224 px and 128 bins unless image_size / seconds say);
- classifier: `cls` params -> 'token'; none -> scenic's 'gap', which pools the tokens of all modalities
  together into one head: classifier='joint_gap' (mbt.model);
- fusion: `bottleneck` [1, n, D] -> n bottleneck tokens (with 'token' scenic makes n_bottlenecks + 1:
  the count is the param's). `encoderblock_{l}_spectrogram` present -> an encoder per modality, else one
  shared. Without bottlenecks, scenic's fused layers run each modality's block over the tokens of all
  (our cross_attention), or the shared block over the joint sequence (our self_attention);
- classes: `output_projection` [D, C] (EPIC's verb and noun heads are one matrix, verb columns first).
What they can't say comes from the caller: fusion_layer, the class names, the head kind.

Each of our parameters has one source, checked for shape (ours <- scenic):
  {m}_tokenizer/embedding       <- embedding[_spectrogram]; the spectrogram's kernel [16,16,3,D] summed
                                   over its input channels: scenic tiles the 1-channel log-mel to 3, so
                                   the sum is the same convolution ([T, mel] time-major in both)
  {m}_tokenizer/cls             <- cls, clsspectrogram
  {m}_tokenizer/pos_embedding   <- Transformer/posembed_input[_spectrogram]/pos_embedding
  encoder/bottleneck            <- bottleneck
  encoder/encoderblock_{l}[_m]  <- Transformer/encoderblock_{l}[_spectrogram] (block names: mbt.vit_checkpoint)
  encoder/encoder_norm[_m]      <- Transformer/encoder_norm (scenic's one norm over all tokens)
  head | head_verb + head_noun  <- output_projection (split at num_verb_classes)
A scenic parameter with no place in the model (`pre_logits` of representation_size, ...) is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from collections.abc import Callable

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from mbt.config import VARIANTS, MBTError, ModelConfig
from mbt.vit_checkpoint import BLOCK_NAMES, patch_kernel
from shards.format import storage

SCENIC_MEL_MEAN, SCENIC_MEL_STD = 1.102, 2.762  # scenic's AudioSet config: spec_mean, spec_stddev
DEFAULT_IMAGE_SIZE = 224  # scenic's crop_size
DEFAULT_MEL_BINS = 128
PATCH = 16  # the only patch side of the model's variants
_BLOCKS = BLOCK_NAMES["new"]  # scenic's blocks: LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")  # flax.training.checkpoints' file names
_BLOCK_KEY = re.compile(r"Transformer/encoderblock_(\d+)(_spectrogram)?/")


# ---------------------------------------------------------------------------------------------------
# Reading the file.
# ---------------------------------------------------------------------------------------------------
def checkpoint_file(path: str) -> str:
    """`path` itself, or the newest `checkpoint_N` file of a checkpoint folder."""
    if not storage.isdir(path):
        if storage.size(path) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return path
    steps = {int(m.group(1)): name for name in storage.listdir(path) if (m := _CHECKPOINT_NAME.fullmatch(name))}
    if not steps:
        raise MBTError(f"{path}: a folder without a checkpoint_N file (scenic's checkpoints); name the file")
    newest = storage.join(path, steps[max(steps)])
    if storage.isdir(newest):
        raise MBTError(f"{newest} is a folder (an orbax checkpoint of newer flax); this importer reads scenic's "
                       f"msgpack files")
    return newest


def read_params(path: str) -> tuple[dict[str, np.ndarray], int | None, str]:
    """({'a/b/kernel': array} of the checkpoint's parameters, its global_step or None, the file read)."""
    import msgpack

    file = checkpoint_file(path)
    with storage.open_path(file, "rb") as f:
        if f.read(2) == b"PK":
            raise MBTError(f"{file} is a zip (.npz) file, not a Flax msgpack checkpoint (a ViT .npz "
                           f"initialises training: mbt train --run.vit_checkpoint=FILE)")
        f.seek(0)
        try:
            params, step, keys = _stream(f)
        except msgpack.OutOfData:
            raise MBTError(f"{file}: the file ends inside the checkpoint (truncated? copy it again)") from None
        except (msgpack.UnpackException, ValueError, TypeError) as e:
            raise MBTError(f"{file} is not a Flax msgpack checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(params, dict):
        raise MBTError(f"{file} holds no scenic parameters: no 'params' or 'optimizer/target' at its top "
                       f"(it has {', '.join(map(str, keys[:10])) or 'nothing'})")
    flat = flatten_dict(_unchunk(params), sep="/")
    bad = next((k for k, v in flat.items() if not isinstance(v, np.ndarray)), None)
    if bad is not None:
        raise MBTError(f"{file}: parameter {bad} is a {type(flat[bad]).__name__}, not an array")
    return flat, (int(step) if step is not None else None), file


def _stream(f) -> tuple[dict | None, int | None, list]:
    """Walk the top-level map, building only PARAMS and global_step."""
    import msgpack

    u = msgpack.Unpacker(f, ext_hook=_ext_hook, read_size=1 << 20, max_buffer_size=2**31 - 1,
                         strict_map_key=False)
    params, step, keys = None, None, []
    for _ in range(u.read_map_header()):
        key = u.unpack()
        keys.append(key)
        if key == "params":
            params = u.unpack()
        elif key == "optimizer":  # flax.optim: {target: PARAMS, state: {step, param_states}}
            for _ in range(u.read_map_header()):
                if u.unpack() == "target":
                    params = u.unpack()
                else:
                    u.skip()
        elif key == "global_step":
            step = u.unpack()
        else:  # opt_state, rng, model_state, ...: skipped unbuilt
            u.skip()
    return params, step, keys


def _ext_hook(code: int, data: bytes):
    """flax.serialization's msgpack extensions: 1 ndarray, 2 complex, 3 numpy scalar."""
    import msgpack

    if code in (1, 3):
        shape, dtype, buffer = msgpack.unpackb(data, raw=True)
        array = np.frombuffer(buffer, dtype=_dtype(dtype)).reshape(shape)  # a view: no copy
        return array if code == 1 else array[()]
    if code == 2:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    raise ValueError(f"unknown msgpack extension type {code}")


def _dtype(name: bytes) -> np.dtype:
    if name == b"bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name.decode())


def _unchunk(tree):
    """flax writes arrays over 1 GiB as {'__msgpack_chunked_array__', shape, chunks}: join them."""
    if not isinstance(tree, dict):
        return tree
    if "__msgpack_chunked_array__" in tree:
        shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
        return np.concatenate([tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]).reshape(shape)
    return {k: _unchunk(v) for k, v in tree.items()}


# ---------------------------------------------------------------------------------------------------
# The architecture, from the weights.
# ---------------------------------------------------------------------------------------------------
def model_config(flat: dict[str, np.ndarray], *, fusion_layer: int | None = None, head: str = "multilabel",
                 verb_classes: int | None = None, image_size: int | None = None,
                 seconds: float | None = None) -> ModelConfig:
    """The ModelConfig of scenic parameters `flat` (see the module docstring); MBTError naming the
    parameter or the flag when they can't be one of this model's."""
    def param(key: str) -> np.ndarray:
        if key not in flat:
            top = sorted({k.split("/")[0] for k in flat})
            raise MBTError(f"not a scenic MBT checkpoint: no parameter {key} (it has {', '.join(top[:12])})")
        return flat[key]

    mods = tuple(m for m, key in (("rgb", "embedding/kernel"), ("spectrogram", "embedding_spectrogram/kernel"))
                 if key in flat)
    if not mods:
        param("embedding/kernel")
    two = len(mods) == 2
    if two and fusion_layer is None:
        raise MBTError("--fusion-layer is required: the weights don't say at which layer fusion starts "
                       "(scenic's config.model.fusion_layer; the paper's MBT: 8)")
    if "pre_logits/kernel" in flat:
        raise MBTError(f"parameter pre_logits/kernel {flat['pre_logits/kernel'].shape}: the checkpoint was trained "
                       f"with representation_size (a Dense + tanh before the head), which this model does not have")
    classes = param("output_projection/kernel")
    layers = sorted({int(m.group(1)) for k in flat if (m := _BLOCK_KEY.match(k))})
    if not layers:
        param("Transformer/encoderblock_0")
    depth = layers[-1] + 1
    if layers != list(range(depth)):
        missing = next(i for i in range(depth) if i not in layers)
        raise MBTError(f"the checkpoint has no Transformer/encoderblock_{missing} but blocks up to {depth - 1}")
    separate = any(m.group(2) for k in flat if (m := _BLOCK_KEY.match(k)))
    block0 = "Transformer/encoderblock_0" + ("_spectrogram" if mods == ("spectrogram",) and separate else "")
    query = param(f"{block0}/MultiHeadDotProductAttention_0/query/kernel")
    width, heads = query.shape[0], query.shape[1]
    mlp = param(f"{block0}/MlpBlock_0/Dense_0/kernel").shape[1]
    if query.ndim != 3 or query.shape[2] * heads != width:
        raise MBTError(f"parameter {block0}/MultiHeadDotProductAttention_0/query/kernel is {query.shape}, not "
                       f"[width, heads, width / heads]")

    sizes = {}  # model fields of the inputs' geometry
    if "rgb" in mods:
        sizes.update(_rgb_geometry(flat, image_size))
    if "spectrogram" in mods:
        sizes.update(_spectrogram_geometry(flat, seconds))
    token = "cls" in flat
    fusion = {"fusion": "none", "fusion_layer": depth}
    if two:
        if "bottleneck" in flat:
            fusion = {"fusion": "bottleneck", "num_bottlenecks": int(param("bottleneck").shape[1])}
        else:
            fusion = {"fusion": "cross_attention" if separate else "self_attention"}
        fusion.update(fusion_layer=fusion_layer, share_encoder=not separate)
    num_classes = int(classes.shape[1])
    heads_cfg: dict = {"head": head, "num_classes": num_classes}
    if verb_classes is not None:
        if not 0 < verb_classes < num_classes:
            raise MBTError(f"--verb-classes {verb_classes}: the head has {num_classes} classes (verbs + nouns); "
                           f"give 1..{num_classes - 1}")
        heads_cfg = {"head": "verb_noun", "num_verb_classes": verb_classes,
                     "num_noun_classes": num_classes - verb_classes}
    size = (depth, int(width), int(heads), int(mlp))
    variant = next((name for name, v in VARIANTS.items() if v == size), None)
    shape = ({"variant": variant} if variant else
             dict(variant="B/16", depth=size[0], width=size[1], num_heads=size[2], mlp_dim=size[3]))
    return ModelConfig(**shape, modalities=mods, classifier="token" if token else "joint_gap" if two else "gap",
                       **sizes, **fusion, **heads_cfg)


def _rgb_geometry(flat: dict[str, np.ndarray], image_size: int | None) -> dict:
    kernel = flat["embedding/kernel"]
    if kernel.ndim not in (4, 5) or kernel.shape[-4:-1] != (PATCH, PATCH, 3):
        raise MBTError(f"parameter embedding/kernel is {kernel.shape}: this model embeds RGB with 16x16 patches "
                       f"[16, 16, 3, D] or tubelets [t, 16, 16, 3, D]")
    t = kernel.shape[0] if kernel.ndim == 5 else 1
    tokens = _posemb_tokens(flat, "Transformer/posembed_input/pos_embedding")
    size = image_size or DEFAULT_IMAGE_SIZE
    per_frame = (size // PATCH) ** 2
    if size % PATCH or tokens % per_frame:
        raise MBTError(f"the RGB position embedding has {tokens} patch tokens, not a whole number of frames of "
                       f"{size}x{size} px ({per_frame} tokens each): pass --image-size (the frames' side)")
    tubelet = {"rgb_tokenizer": "tubelet", "tubelet_frames": t} if kernel.ndim == 5 else {}
    return {"image_size": size, "num_frames": tokens // per_frame * t, **tubelet}


def _spectrogram_geometry(flat: dict[str, np.ndarray], seconds: float | None) -> dict:
    kernel = flat["embedding_spectrogram/kernel"]
    if kernel.ndim != 4 or kernel.shape[:2] != (PATCH, PATCH) or kernel.shape[2] not in (1, 3):
        raise MBTError(f"parameter embedding_spectrogram/kernel is {kernel.shape}: this model embeds the "
                       f"spectrogram with 16x16 patches [16, 16, 3 (or 1), D]")
    tokens = _posemb_tokens(flat, "Transformer/posembed_input_spectrogram/pos_embedding")
    if seconds is None:
        rows, bins = tokens // (DEFAULT_MEL_BINS // PATCH) * PATCH, DEFAULT_MEL_BINS
    else:
        rows = round(100 * seconds)
        bins = tokens // max(rows // PATCH, 1) * PATCH
    if rows < PATCH or rows % PATCH or (rows // PATCH) * (bins // PATCH) != tokens:
        given = f"{seconds:g} s ({rows} rows)" if seconds else f"{DEFAULT_MEL_BINS} mel bins"
        raise MBTError(f"the spectrogram position embedding has {tokens} patch tokens, which {given} of 16x16 "
                       f"patches can't make: pass --seconds (the spectrogram's length, 100 rows a second)")
    return {"spectrogram_frames": rows, "num_mel_bins": bins}


def _posemb_tokens(flat: dict[str, np.ndarray], key: str) -> int:
    """Patch tokens of a position embedding [1, (1+)N, D] (scenic's 'token' classifier adds the CLS's)."""
    if key not in flat:
        raise MBTError(f"not a scenic MBT checkpoint: no parameter {key}")
    return int(flat[key].shape[1]) - (1 if "cls" in flat else 0)


# ---------------------------------------------------------------------------------------------------
# The parameters.
# ---------------------------------------------------------------------------------------------------
def convert(flat: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """{'params': our tree} from scenic parameters `flat`: every parameter of the model from its one
    source; MBTError naming the first that is missing or of another shape, or a scenic one left over."""
    from mbt.model import param_shapes

    wanted = flatten_dict(param_shapes(cfg)["params"], sep="/")
    out, used = {}, set()
    for path, want in wanted.items():
        key, transform = _source(path, cfg, flat)
        if key not in flat:
            raise MBTError(f"the checkpoint has no {key} (for the model's {path}): is it scenic's MBT?")
        value = np.asarray(transform(flat[key]), np.float32)
        if value.shape != tuple(want.shape):
            raise MBTError(f"parameter {key}: {flat[key].shape} gives {path} the shape {value.shape}, the model "
                           f"needs {tuple(want.shape)}")
        out[path] = value
        used.add(key)
    # scenic makes the bottleneck tokens whenever use_bottleneck is on, even when no layer fuses
    unused = sorted(set(flat) - used - ({"bottleneck"} if not cfg.fused_layers else set()))
    if unused:
        raise MBTError(f"parameter {unused[0]} {flat[unused[0]].shape} has no place in this model"
                       + (f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""))
    return {"params": unflatten_dict(out, sep="/")}


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _source(path: str, cfg: ModelConfig, flat: dict) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(scenic key, array transform) of one of our parameters."""
    parts = path.split("/")
    leaf = parts[-1]
    if parts[0].endswith("_tokenizer"):
        m = parts[0].removesuffix("_tokenizer")
        suffix = "" if m == "rgb" else "_spectrogram"
        rest = "/".join(parts[1:])
        if rest == "embedding/kernel" and m == "spectrogram":
            return "embedding_spectrogram/kernel", lambda k: patch_kernel(k, "spectrogram", cfg)
        if rest.startswith("embedding/"):
            return f"embedding{suffix}/{leaf}", _same
        if rest == "cls":
            return ("cls" if m == "rgb" or len(cfg.modalities) == 1 else "cls" + m), _same
        if rest == "pos_embedding":
            return f"Transformer/posembed_input{suffix}/pos_embedding", _same
    elif parts[0] == "encoder":
        if parts[1] == "bottleneck":
            return "bottleneck", _same
        if parts[1].startswith("encoder_norm"):
            return f"Transformer/encoder_norm/{leaf}", _same
        block = re.fullmatch(r"encoderblock_(\d+)(?:_(rgb|spectrogram))?", parts[1])
        if block:
            layer, m = block.groups()
            theirs = f"encoderblock_{layer}"
            if m == "spectrogram" or (m is None and cfg.modalities == ("spectrogram",)
                                      and any(k.startswith(f"Transformer/{theirs}_spectrogram/") for k in flat)):
                theirs += "_spectrogram"
            sub = "/".join(parts[2:-1])  # attention/query, mlp/hidden, attention_norm, ...
            top = sub.split("/")[0]
            name = _BLOCKS.get(sub) or _BLOCKS.get(top, top) + sub[len(top):]
            return f"Transformer/{theirs}/{name}/{leaf}", _same
    elif parts[0] == "head":
        return f"output_projection/{leaf}", _same
    elif parts[0] in ("head_verb", "head_noun"):  # one matrix in scenic: verb columns, then noun columns
        v = cfg.num_verb_classes
        cut = (lambda a: a[..., :v]) if parts[0] == "head_verb" else (lambda a: a[..., v:])
        return f"output_projection/{leaf}", cut
    return f"(nothing in scenic's MBT for {path})", _same


# ---------------------------------------------------------------------------------------------------
# The run directory.
# ---------------------------------------------------------------------------------------------------
def import_scenic(checkpoint: str, workdir: str, *, fusion_layer: int | None = None,
                  classes: list[str] | None = None, head: str = "multilabel", verb_classes: int | None = None,
                  image_size: int | None = None, seconds: float | None = None, frame_stride: int | None = None,
                  mel_mean: float = SCENIC_MEL_MEAN, mel_std: float = SCENIC_MEL_STD):
    """Write `workdir` as `mbt train` would have (config.json, data.json, an orbax checkpoint at the
    checkpoint's global_step, or 0) from a scenic MBT checkpoint; returns (TrainConfig, step)."""
    import math

    from mbt import run_dir

    positive = lambda v: math.isfinite(v) and v > 0  # noqa: E731
    for flag, value, ok, fix in (
            ("--image-size", image_size, lambda v: v >= PATCH and v % PATCH == 0, "a multiple of 16 px"),
            ("--seconds", seconds, positive, "a number > 0"),
            ("--frame-stride", frame_stride, positive, "1 or more"),
            ("--mel-mean", mel_mean, math.isfinite, "a finite number"),
            ("--mel-std", mel_std, positive, "a number > 0")):
        if value is not None and not ok(value):
            raise MBTError(f"{flag} {value}: use {fix}")
    if run_dir.read_config_dict(workdir) is not None:
        raise MBTError(f"--workdir {workdir} already holds a run (config.json); import into a new folder")
    flat, step, file = read_params(checkpoint)
    model = model_config(flat, fusion_layer=fusion_layer, head=head, verb_classes=verb_classes,
                         image_size=image_size, seconds=seconds)
    names = class_names(classes, model)
    params = convert(flat, model)["params"]
    del flat  # (the arrays live on in `params`: one copy of the weights from here on)
    cfg = run_config(model, seconds=seconds, frame_stride=frame_stride, mel_mean=mel_mean, mel_std=mel_std)
    step = step or 0
    save_checkpoint(workdir, cfg, params, step)
    write_data_record(workdir, names, mel_mean, mel_std, {"kind": "scenic", "checkpoint": file, "step": step})
    return cfg, step


def class_names(classes: list[str] | None, model: ModelConfig) -> list[str]:
    """The head's class names: `classes`, checked against the head's size, or class_0, class_1, ..."""
    n = model.num_classes if model.head != "verb_noun" else model.num_verb_classes + model.num_noun_classes
    if classes is None:
        return [f"class_{i}" for i in range(n)]
    if len(classes) != n:
        raise MBTError(f"--classes names {len(classes)} classes, the checkpoint's head has {n}; pass the "
                       f"vocabulary it was trained with")
    return list(classes)


def run_config(model: ModelConfig, *, seconds: float | None, frame_stride: int | None, mel_mean: float,
               mel_std: float):
    """The TrainConfig of an imported model: the paper's preset of its head kind for everything the
    weights don't fix, the input shaped to the model and preprocessed as scenic's input was."""
    from mbt.train_config import RunConfig, TrainConfig, mbt_base_audioset, mbt_base_epic, mbt_base_vggsound

    base = {"multilabel": mbt_base_audioset, "multiclass": mbt_base_vggsound, "verb_noun": mbt_base_epic}[model.head]()
    span = model.spectrogram_frames / 100 if "spectrogram" in model.modalities else seconds or base.input.clip_seconds
    inp = dataclasses.replace(
        base.input, num_frames=model.num_frames, crop_size=model.image_size, clip_seconds=span,
        frame_stride=frame_stride or base.input.frame_stride, mel_mean=mel_mean, mel_std=mel_std,
        mel_per_bin=False, rgb_normalization="symmetric")  # scenic's zero_centering: x / 127.5 - 1
    return TrainConfig(model=model, input=inp, optim=base.optim, run=RunConfig()).check()


def save_checkpoint(workdir: str, cfg, params: dict, step: int) -> None:
    """An orbax checkpoint of a TrainState (`params`, a fresh optimiser state) as mbt train saves one,
    with config.json. Written from the numpy arrays as they are: the optimiser state's zeros are
    np.zeros (pages the kernel maps only when written), and orbax is told not to copy the arrays
    before its background write (nothing changes them), so the import holds one copy of the weights."""
    import jax
    from orbax.checkpoint import type_handlers

    from mbt.checkpoints import Checkpointer
    from mbt.train_state import TrainState, make_optimizer

    opt_shapes = jax.eval_shape(make_optimizer(cfg, 2, 1).init, params)
    opt_state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), opt_shapes)
    state = TrainState(step=np.asarray(step, np.int32), params=params, opt_state=opt_state)
    usual = type_handlers.get_type_handler(np.ndarray)
    type_handlers.register_type_handler(np.ndarray, type_handlers.NumpyHandler(deepcopy_host_arrays=False),
                                        override=True)
    try:
        ckpt = Checkpointer(workdir, cfg, keep=1)
        try:
            ckpt.save(step, state, None)
        finally:
            ckpt.close()
    finally:
        type_handlers.register_type_handler(np.ndarray, usual, override=True)


def write_data_record(workdir: str, classes: list[str], mel_mean: float, mel_std: float, source: dict) -> None:
    """RUN/data.json of an imported run: no training data, the features the weights expect (the
    toolkit's log-mel, scenic's mel statistics) and where the weights came from."""
    from mbt import run_dir
    from shards.format.schema import feature_params

    record = {"data": None, "split": None, "generation": None, **{k: None for k in run_dir.DATA_FIELDS},
              "classes": classes, "features": feature_params("log_mel"), "mel_mean": mel_mean,
              "mel_std": mel_std, "source": source}
    storage.write_atomic(run_dir.path(workdir, run_dir.DATA), json.dumps(record, indent=1, sort_keys=True).encode())
