"""`mbt import scenic|ast CHECKPOINT --workdir RUN`: published weights as a run directory.

    mbt import scenic gs://B/mbt_as500k/checkpoint_500000 --workdir runs/as500k --fusion-layer 8 \
        --classes class_labels_indices.csv
    mbt import ast audioset_10_10_0.4593.pth --workdir runs/ast --classes class_labels_indices.csv
    mbt import ast ./ast-finetuned-audioset-10-10-0.4593 --workdir runs/ast_hf     # Hugging Face folder

The result is an ordinary run (config.json, data.json with the preprocessing the weights expect, an
orbax checkpoint): `mbt eval`, `mbt predict` and `mbt report` work on it unchanged, and `mbt train
--run.init_from=RUN` fine-tunes from it. The readers live in mbt (mbt.scenic_import, mbt.ast_import);
this module only parses the command line.
"""

from __future__ import annotations

import argparse

D = argparse.ArgumentDefaultsHelpFormatter


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("import", help="published MBT (scenic) or AST weights as a run directory",
                              description=__doc__.split("\n\n")[0], formatter_class=D)
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    add_scenic_parser(kinds)
    add_ast_parser(kinds)


def read_classes(path: str | None) -> list[str] | None:
    """--classes: a name per line, or AudioSet's class_labels_indices.csv (None: the importer's default)."""
    if not path:
        return None
    from pipelines.manifests.vocabulary import read_classes as read

    return read(path)


# --- scenic's MBT ------------------------------------------------------------------------------------
def add_scenic_parser(kinds) -> None:
    from mbt.scenic_import import SCENIC_MEL_MEAN, SCENIC_MEL_STD

    p = kinds.add_parser("scenic", help="a scenic MBT checkpoint (Flax msgpack)", formatter_class=D,
                         description="Architecture, frames, classes and pooling are read from the weights; "
                                     "the run records scenic's preprocessing (RGB in [-1, 1], fixed mel "
                                     "statistics).")
    p.add_argument("checkpoint", help="scenic's checkpoint_N file, or its folder (the newest one); local or gs://")
    p.add_argument("--workdir", required=True, help="the run directory to write (a new folder)")
    p.add_argument("--fusion-layer", type=int, help="layer where fusion starts, scenic's model.fusion_layer "
                   "(required for two modalities: the weights don't say; the paper's MBT: 8)")
    p.add_argument("--classes", help="class names: a text file, one per line, or AudioSet's "
                   "class_labels_indices.csv; without it class_0, class_1, ...")
    p.add_argument("--head", choices=("multilabel", "multiclass"), default="multilabel",
                   help="sigmoid (AudioSet) or softmax (VGGSound) head")
    p.add_argument("--verb-classes", type=int, help="EPIC-Kitchens: the head's first N classes are verbs, "
                   "the rest nouns (two softmax heads)")
    p.add_argument("--image-size", type=int, help="frame side in px, when the RGB position embedding "
                   "can't tell frames from their size (default 224)")
    p.add_argument("--seconds", type=float, help="spectrogram length in s (100 rows a second), when its "
                   "position embedding can't tell rows from mel bins (default: 128 bins)")
    p.add_argument("--frame-stride", type=int, help="sample F consecutive frames at this stride (scenic's "
                   "AudioSet config: 2) instead of spreading them over the clip")
    p.add_argument("--mel-mean", type=float, default=SCENIC_MEL_MEAN, help="spectrogram normalisation mean")
    p.add_argument("--mel-std", type=float, default=SCENIC_MEL_STD, help="spectrogram normalisation std")
    p.set_defaults(run=run_scenic)


def run_scenic(args: argparse.Namespace) -> int:
    from mbt.scenic_import import import_scenic
    from tools.train_cmds import check_workdir

    check_workdir(args.workdir)
    classes = read_classes(args.classes)
    cfg, step = import_scenic(args.checkpoint, args.workdir, fusion_layer=args.fusion_layer, classes=classes,
                              head=args.head, verb_classes=args.verb_classes, image_size=args.image_size,
                              seconds=args.seconds, frame_stride=args.frame_stride, mel_mean=args.mel_mean,
                              mel_std=args.mel_std)
    m = cfg.model
    print(f"import scenic: {args.workdir} at step {step}: {m.num_layers} layers of width {m.hidden_size}, "
          f"{'+'.join(m.modalities)}, fusion {m.fusion} from layer {m.fusion_layer}, classifier {m.classifier}")
    return 0


# --- AST ---------------------------------------------------------------------------------------------
def add_ast_parser(kinds) -> None:
    p = kinds.add_parser("ast", help="AST weights: the AST repository's .pth, or a Hugging Face folder",
                         formatter_class=D,
                         description="Depth, width, grid and classes are read from the weights (a Hugging Face "
                                     "config.json states the rest); the run records AST's preprocessing (Kaldi "
                                     "fbank, (x + 4.2677393) / (4.5689974 * 2)). A .pth is loaded with "
                                     "torch.load(weights_only=True): one holding code is refused.")
    p.add_argument("checkpoint", help="the AST repository's .pth (state dict), or a Hugging Face "
                   "ASTForAudioClassification folder (config.json + model.safetensors); local or gs://")
    p.add_argument("--workdir", required=True, help="the run directory to write (a new folder)")
    p.add_argument("--heads", type=int, help="attention heads of a .pth (its weights don't say; default: "
                   "AST's, 12 for width 768, 6 for 384, 3 for 192; required for other widths)")
    p.add_argument("--frames", type=int, help="input spectrogram rows (100 a second; default: the multiple of "
                   "16 that fills its position embeddings, AST's 1024 for 10.24 s)")
    p.add_argument("--mel-bins", type=int, help="a .pth's mel bins (default: AST's 128)")
    p.add_argument("--frequency-stride", type=int, help="a .pth's patch stride over frequency (default: AST's 10)")
    p.add_argument("--time-stride", type=int, help="a .pth's patch stride over time (default: AST's 10)")
    p.add_argument("--classes", help="class names: a text file, one per line, or AudioSet's "
                   "class_labels_indices.csv (default: Hugging Face's id2label, else class_0, class_1, ...)")
    p.add_argument("--head", choices=("multilabel", "multiclass"),
                   help="sigmoid (AudioSet) or softmax (ESC-50, Speech Commands) head (default: Hugging Face's "
                        "problem_type, else multilabel)")
    p.set_defaults(run=run_ast)


def run_ast(args: argparse.Namespace) -> int:
    from mbt.ast_import import import_ast
    from tools.train_cmds import check_workdir

    check_workdir(args.workdir)
    classes = read_classes(args.classes)
    s = import_ast(args.checkpoint, args.workdir, heads=args.heads, frames=args.frames, mel_bins=args.mel_bins,
                   frequency_stride=args.frequency_stride, time_stride=args.time_stride, classes=classes,
                   head=args.head)  # fmt: skip
    print(f"import ast: {args.workdir}: {s['depth']} layers of width {s['width']} ({s['heads']} heads), "
          f"{s['grid'][0]}x{s['grid'][1]} patches of {s['frames']} spectrogram rows ({s['frames'] / 100:g} s), "
          f"{s['classes']} classes ({s['head']}); evaluate on kaldi_fbank shards: mbt eval --workdir {args.workdir} "
          "--data DIR")
    return 0
