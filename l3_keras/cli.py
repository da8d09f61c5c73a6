"""The `l3` command. Each subcommand parses its flags here and calls one library function.

Subcommands register themselves in `_COMMANDS` through `_command`; imports of heavy modules happen
inside the handlers so `l3 --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys

from l3_keras.errors import L3Error

_COMMANDS = []
RUNNERS = ("local", "beam")


def _command(fn):
    """Registers `fn(subparsers)`, which adds one subcommand and sets `handler`."""
    _COMMANDS.append(fn)
    return fn


@_command
def _info(sub):
    p = sub.add_parser("info", help="versions, devices seen by TensorFlow, model presets")

    def handler(args):
        import tensorflow as tf

        from l3_keras import files
        from l3_keras.config import PRESETS

        info = {
            **files.versions(),
            "devices": [d.name for d in tf.config.list_logical_devices()],
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "presets": {name: cfg.to_dict() for name, cfg in PRESETS.items()},
        }
        print(json.dumps(info, indent=2))
        return 0

    p.set_defaults(handler=handler)


TRAIN_FIELDS = (("learning-rate", float), ("weight-decay", float), ("batch-per-replica", int),
                ("global-batch", int), ("steps-per-epoch", int), ("epochs", int),
                ("validation-pairs", int), ("pairs-per-video", int), ("val-fraction", float),
                ("checkpoint-every", int), ("log-every", int), ("seed", int))


def add_train_arguments(p, preset="tiny"):
    """The training flags shared by `l3 train` and recipes/train_*.py (-> train.recipe.run_recipe)."""
    p.add_argument("--data", help="folder of videos, or prepared shards (folder or glob); "
                                   "default: the cached synthetic collection")
    p.add_argument("--val-data", help="held-out videos or shards (default: every 10th shard)")
    p.add_argument("--preset", default=preset, help=f"model preset (default {preset})")
    p.add_argument("--model-dir", help="run directory (default runs/PRESET-DATANAME); rerun to resume")
    p.add_argument("--prepared-dir", help="where videos are prepared (default MODEL_DIR/prepared)")
    p.add_argument("--cache-dir", help="synthetic data cache (default .cache/ here)")
    p.add_argument("--label-from", choices=["folder"], help="label = parent folder name")
    p.add_argument("--per-class", action="store_true", help="held-out AVC accuracy per class too")
    p.add_argument("--export", help="export name under saved_models/ ('' = none)")
    p.add_argument("--workers", type=int, default=2, help="decoding / clip-making processes")
    p.add_argument("--videos-per-shard", type=int, help="when preparing videos (default by size)")
    add_train_config_arguments(p)


def add_train_config_arguments(p):
    """Flags for TrainConfig fields (None when not given: the recipe's default)."""
    for name, kind in TRAIN_FIELDS:
        p.add_argument(f"--{name}", type=kind, help="TrainConfig." + name.replace("-", "_"))
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], help="default constant")
    p.add_argument("--mixed-precision", choices=["bf16", "fp16"], help="default float32")
    p.add_argument("--negatives", choices=["sampled", "batch"],
                   help="sampled (paper): half the pairs have another video's audio; batch: every "
                        "frame against every audio of the batch (TrainConfig.negatives; default: "
                        "the recipe's, sampled except train_avdigits.py)")
    p.add_argument("--audio-context", type=float,
                   help="edge-free model: seconds of real audio the audio tower sees on each side "
                        "of its window (ModelConfig.audio_context_seconds; e.g. 0.8 for tiny)")
    p.add_argument("--strategy", choices=["auto", "mirrored", "multiworker", "default"],
                   help="auto: all GPUs mirrored, else one device; multiworker needs TF_CONFIG")


def train_config_changes(args) -> dict:
    """The TrainConfig fields set by `add_train_config_arguments` flags that were given."""
    names = [name for name, _ in TRAIN_FIELDS] + ["lr-schedule", "mixed-precision", "strategy",
                                                "negatives"]
    values = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def configure_logging(fmt: str) -> None:
    """Our progress lines at INFO; other libraries' loggers (TensorFlow's) at WARNING.

    Call before TensorFlow is imported: TF gives its own logger a handler when the root logger has
    none, and each of its lines would then print twice (its handler, then the root's).
    """
    import logging

    logging.basicConfig(level=logging.WARNING, format=fmt, datefmt="%H:%M:%S")
    logging.getLogger("l3_keras").setLevel(logging.INFO)


def run_train_arguments(args) -> dict:
    """Calls train.recipe.run_recipe with the parsed training flags; prints the results."""
    configure_logging("%(asctime)s %(message)s")
    from l3_keras.train.recipe import run_recipe

    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    results = run_recipe(options.pop("data"), **options)
    print(json.dumps(results, indent=2))
    return results


@_command
def _train(sub):
    p = sub.add_parser("train", help="train the AVC model (fit, checkpoints, resume, export)")
    add_train_arguments(p)
    p.set_defaults(handler=lambda args: run_train_arguments(args) and 0)


def add_runner_arguments(p):
    """--runner local|beam and repeated --beam-option KEY=VALUE (apache-beam is an extra)."""
    p.add_argument("--runner", choices=RUNNERS, default="local",
                   help="local (default) or beam: an Apache Beam job (pip install -e .[beam]); "
                        "locally on all cores unless --beam-option runner=... says otherwise")
    p.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                   help="Beam pipeline option, repeatable (e.g. runner=DataflowRunner, "
                        "project=P, region=R, temp_location=gs://B/tmp, setup_file=./setup.py)")


def uses_beam(args) -> bool:
    """True for --runner beam; --beam-option without it is an error rather than ignored."""
    if args.beam_option and args.runner != "beam":
        raise L3Error("--beam-option needs --runner beam.")
    if args.runner == "beam":
        configure_logging("%(message)s")  # the job's progress lines; Beam's own INFO lines off
    return args.runner == "beam"


@_command
def _prepare(sub):
    p = sub.add_parser("prepare", help="videos -> TFRecord shards plus a manifest (resumable)")
    p.add_argument("input", help="folder of videos (recursive), one video, or a list file of paths")
    p.add_argument("--out", required=True, help="output folder for shards and manifest")
    p.add_argument("--preset", help="model preset whose sample rate and frame sizes to use")
    p.add_argument("--sample-rate", type=int, help="audio rate, Hz (default 48000)")
    p.add_argument("--fps", type=float, help="frames kept per second (default 4)")
    p.add_argument("--short-side", type=int, help="stored frames' short side in pixels")
    p.add_argument("--max-seconds", type=float, help="keep the first N s (10; 0 = all)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.add_argument("--num-shards", type=int, default=1, help="machines sharing the input")
    p.add_argument("--shard-index", type=int, default=0, help="this machine's part")
    p.add_argument("--videos-per-shard", type=int, help="videos per TFRecord file")
    p.add_argument("--label-from", choices=["folder"], help="label = parent folder name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runner_arguments(p)

    def handler(args):
        configure_logging("%(message)s")
        from l3_keras.config import DataConfig, get_preset
        from l3_keras.data.prepare import prepare

        config = DataConfig.for_model(get_preset(args.preset)) if args.preset else DataConfig()
        changes = {
            "sample_rate": args.sample_rate,
            "fps": args.fps,
            "frame_short_side": args.short_side,
            "max_seconds": args.max_seconds,
        }
        config = config.replace(**{k: v for k, v in changes.items() if v is not None})
        if config.max_seconds == 0:
            config = config.replace(max_seconds=None)
        if uses_beam(args):
            if args.num_shards != 1 or args.shard_index != 0 or args.workers != 1:
                raise L3Error("With --runner beam, Beam splits the work: set workers with "
                              "--beam-option (direct_num_workers=N locally) instead of "
                              "--workers / --num-shards / --shard-index.")
            from l3_keras.beam.prepare import prepare_beam

            manifest = prepare_beam(args.input, args.out, config, args.videos_per_shard,
                                    args.label_from, args.beam_option)
            print(json.dumps(manifest["totals"]))
            return 0
        manifest = prepare(
            args.input,
            args.out,
            config,
            workers=args.workers,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
            videos_per_shard=args.videos_per_shard,
            label_from=args.label_from,
            progress=not args.no_progress,
        )
        print(json.dumps(manifest["totals"]))
        return 0

    p.set_defaults(handler=handler)


@_command
def _merge_manifests(sub):
    p = sub.add_parser("merge-manifests", help="join the manifests of `prepare --num-shards` parts")
    p.add_argument("parts", nargs="+", help="part output folders or manifest files")
    p.add_argument("--out", required=True, help="merged manifest file, e.g. DIR/manifest.json")

    def handler(args):
        from l3_keras.data.prepare import merge_manifests

        merged = merge_manifests(args.parts, args.out)
        print(json.dumps({**merged["totals"], "missing_parts": merged["inputs"]["missing_parts"]}))
        return 0

    p.set_defaults(handler=handler)


def _export_flags(p):
    """What `l3 export` and `l3 import-openl3` both write: version, root, hop, TFLite."""
    p.add_argument("--version", type=int, help="TF Serving version (default: next free)")
    p.add_argument("--root", default="saved_models", help="folder of exports (saved_models)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--hop-size", type=float, default=0.1,
                   help="seconds between windows of the whole-file signatures (0.1)")
    p.add_argument("--tflite", action="store_true",
                   help="also write audio_embedding.tflite and image_embedding.tflite")


@_command
def _export(sub):
    p = sub.add_parser("export", help="trained model -> .keras files + TF Serving SavedModel")
    p.add_argument("source", help="run folder (config.json + model.keras), export folder or .keras")
    p.add_argument("--name", required=True, help="export name: writes ROOT/NAME")
    p.add_argument("--preset", help="model preset, for a .keras file without config.json")
    _export_flags(p)

    def handler(args):
        from l3_keras.export import export

        path = export(args.source, args.name, args.version, args.preset, args.root, args.overwrite,
                      args.hop_size, args.tflite)
        print(path)
        return 0

    p.set_defaults(handler=handler)


@_command
def _import_openl3(sub):
    p = sub.add_parser("import-openl3", help="OpenL3's published weights -> an export (as `l3 export`)")
    p.add_argument("weights", help="OpenL3 audio weights, e.g. openl3_audio_mel256_music.h5[.gz]")
    p.add_argument("--image", help="the matching image weights, e.g. openl3_image_mel256_music.h5")
    p.add_argument("--name", required=True, help="export name: writes ROOT/NAME")
    p.add_argument("--input-repr", choices=["linear", "mel128", "mel256"],
                   help="front end (default: from the file name)")
    p.add_argument("--content-type", choices=["music", "env"], help="default: from the file name")
    _export_flags(p)

    def handler(args):
        from l3_keras.openl3_import import import_openl3

        print(import_openl3(args.weights, args.name, args.image, args.input_repr,
                            args.content_type, args.root, args.version, args.overwrite,
                            args.hop_size, args.tflite))
        return 0

    p.set_defaults(handler=handler)


@_command
def _embed(sub):
    p = sub.add_parser("embed", help="audio / image / video files -> one .npz of embeddings each")
    p.add_argument("media_type", choices=["audio", "image", "video"], help="what the inputs are")
    p.add_argument("inputs", nargs="+", help="files, or folders searched recursively")
    p.add_argument("-o", "--out", required=True, help="output folder for the .npz files")
    p.add_argument("--model", required=True, help="export folder (saved_models/NAME)")
    p.add_argument("--hop-size", type=float, default=0.1, help="seconds between windows (0.1)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (32)")
    p.add_argument("--mode", choices=["exact", "shared"], default="exact",
                   help="audio: each window through the tower (exact), or the tower once over "
                        "the file, windows pooled from the shared map (shared: faster, a "
                        "different embedding; see l3_keras/embed_stream.py)")
    p.add_argument("--precision", choices=["bf16", "fp16"],
                   help="mixed-precision inference (front end stays float32); default float32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runner_arguments(p)

    def handler(args):
        if uses_beam(args):
            from l3_keras.beam.embed import embed_beam

            manifest = embed_beam(args.kind, args.inputs, args.out, args.model, args.hop_size,
                                  args.batch_size, args.beam_option)
            print(json.dumps(manifest["totals"]))
            return 0 if manifest["totals"]["embedded"] else 1
        from l3_keras.embed_files import embed_files

        done = embed_files(
            args.media_type, args.inputs, args.out, args.model, args.hop_size, args.batch_size,
            progress=not args.no_progress, mode=args.mode, precision=args.precision,
        )
        return 0 if done else 1

    p.set_defaults(handler=handler)


def _load_model(args):
    from l3_keras.export import load_source

    return load_source(args.model, getattr(args, "preset", None))


@_command
def _evaluate(sub):
    p = sub.add_parser("evaluate", help="AVC accuracy, or linear probes on labelled sounds/images")
    kinds = p.add_subparsers(dest="evaluation", required=True)
    avc = kinds.add_parser("avc", help="AVC accuracy on held-out shards (balanced, 95%% CI)")
    avc.add_argument("model", help="run folder, export folder or .keras file")
    avc.add_argument("shards", help="held-out shards: prepared folder, glob or file")
    avc.add_argument("--num-pairs", type=int, default=1024, help="pairs scored (half positive)")
    probe = kinds.add_parser("probe", help="cross-validated linear probe, beside random weights")
    probe.add_argument("model", help="run folder, export folder or .keras file")
    probe.add_argument("data", help="folder of labelled files (or the folder CSV names are in)")
    probe.add_argument("--media-type", "--kind", choices=["audio", "image"], default="audio")
    probe.add_argument("--label-from", choices=["folder", "pattern", "csv"], default="folder")
    probe.add_argument("--pattern", help="regex with a (?P<label>...) group, or 'fsdd' / 'dcase'")
    probe.add_argument("--csv", help="CSV with filename, label and (optional) fold columns")
    probe.add_argument("--label-column", default="label", help="CSV label column (ESC-50: category)")
    probe.add_argument("--feature", choices=["conv4", "embedding"], default="conv4")
    probe.add_argument("--classifier", choices=["logreg", "svm"], default="logreg")
    probe.add_argument("--C", type=float, default=0.1, help="inverse regularisation")
    probe.add_argument("--folds", type=int, default=5, help="stratified folds when none given")
    probe.add_argument("--per-class", type=int, help="use at most N files of each class")
    probe.add_argument("--hop", type=float, default=0.5, help="seconds between 1 s windows")
    probe.add_argument("--no-random", action="store_true", help="skip the random-weight baseline")
    for q in (avc, probe):
        q.add_argument("--out", required=True, help="report folder (JSON + PNGs)")
        q.add_argument("--preset", help="preset of a bare .keras file")
        q.add_argument("--seed", type=int, default=0)

    def handler(args):
        l3, cfg = _load_model(args)
        if args.evaluation == "avc":
            from l3_keras.evaluate.avc import evaluate_avc, write_avc_report

            result = evaluate_avc(l3, args.shards, cfg, num_pairs=args.num_pairs, seed=args.seed)
            write_avc_report(result, args.out)
            print(json.dumps(result))
            return 0
        from l3_keras.evaluate import linear_probe as lp

        pattern = {"fsdd": lp.FSDD_PATTERN, "dcase": lp.DCASE_PATTERN}.get(args.pattern,
                                                                           args.pattern)
        items = lp.list_labelled(args.data, args.label_from, pattern, args.csv,
                                 label_column=args.label_column, media_type=args.media_type)
        if args.per_class:
            items = lp.subset(items, args.per_class, args.seed)
        result = lp.probe(l3, cfg, items, args.media_type, args.feature, args.classifier, args.C,
                          args.folds, args.seed, args.hop, not args.no_random, args.out)
        print(json.dumps({k: (v["mean"], v["std"]) for k, v in result.items()
                          if k in ("trained", "random")}))
        return 0

    p.set_defaults(handler=handler)


@_command
def _localize(sub):
    p = sub.add_parser("localize", help="heatmaps of where the sound comes from (Grad-CAM)")
    p.add_argument("model", help="run folder, export folder or .keras file")
    p.add_argument("video", help="video file")
    p.add_argument("--time", type=float, nargs="+", help="seconds (default: every --every s)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between heatmaps")
    p.add_argument("--out", required=True, help="folder for PNG overlays and heatmaps.npz")
    p.add_argument("--preset", help="preset of a bare .keras file")

    def handler(args):
        from l3_keras.evaluate.localize import localize_video

        l3, cfg = _load_model(args)
        result = localize_video(l3, cfg, args.video, args.time, args.every, args.out)
        print(json.dumps({"times": result["times"].tolist(), "files": result["files"]}))
        return 0

    p.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l3", description="L3-Net (Look, Listen and Learn) tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except L3Error as e:
        print(f"l3 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
