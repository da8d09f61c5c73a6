"""Linear-probe transfer to ESC-50 (paper Sec. 4.2, Table 2), beside the same net with random weights.

ESC-50 (github.com/karolpiczak/ESC-50) ships audio/*.wav and meta/esc50.csv (filename, fold,
target, category, ...); its 5 official folds are used as given. Each clip is embedded in 1 s
windows, the conv4 features (4x3 max-pooled grid; 6144-D for the paper model) train a
standardised linear classifier on windows, and a clip is the mean of its windows' scores.

    python recipes/eval_esc50.py --esc50 ~/data/ESC-50-master --model saved_models/NAME --out DIR

The same machinery reads DCASE-style folders (class in the file name) with --dcase FOLDER, or
any CSV with --csv FILE --root AUDIO_FOLDER (--label-column, --fold-column).
"""
import argparse
import json
import os

from l3_keras.errors import L3Error


def collection(args):
    """(items) from --esc50, --dcase or --csv/--root."""
    from l3_keras.evaluate import linear_probe as lp

    if args.esc50:
        return lp.list_labelled(os.path.join(args.esc50, "audio"), "csv",
                                csv_path=os.path.join(args.esc50, "meta", "esc50.csv"),
                                label_column="category", fold_column="fold")
    if args.dcase:
        return lp.list_labelled(args.dcase, "pattern", lp.DCASE_PATTERN)
    if args.csv:
        return lp.list_labelled(args.root or os.path.dirname(args.csv), "csv", csv_path=args.csv,
                                label_column=args.label_column, fold_column=args.fold_column)
    raise L3Error("Give --esc50 PATH (ESC-50 root), --dcase FOLDER or --csv FILE.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--esc50", help="ESC-50 root (holds audio/ and meta/esc50.csv)")
    source.add_argument("--dcase", help="folder of DCASE-style files, class in the file name")
    source.add_argument("--csv", help="CSV with filename / label / fold columns")
    parser.add_argument("--root", help="folder the CSV's file names are relative to")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--fold-column", default="fold")
    parser.add_argument("--model", required=True, help="export folder, run folder or .keras file")
    parser.add_argument("--preset", help="preset of a bare .keras file")
    parser.add_argument("--out", required=True, help="report folder (JSON + PNGs)")
    parser.add_argument("--feature", choices=["conv4", "embedding"], default="conv4")
    parser.add_argument("--classifier", choices=["logreg", "svm"], default="logreg")
    parser.add_argument("--C", type=float, default=0.1)
    parser.add_argument("--folds", type=int, default=5, help="stratified folds if none are given")
    parser.add_argument("--hop", type=float, default=0.5, help="seconds between 1 s windows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from l3_keras.evaluate import linear_probe as lp
    from l3_keras.export import load_source

    try:
        items = collection(args)
        l3, cfg = load_source(args.model, args.preset)
        result = lp.probe(l3, cfg, items, "audio", args.feature, args.classifier, args.C,
                          args.folds, args.seed, args.hop, out_dir=args.out)
    except L3Error as err:
        parser.exit(2, f"eval_esc50: error: {err}\n")
    summary = {name: {"mean": result[name]["mean"], "std": result[name]["std"]}
               for name in ("trained", "random")}
    print(json.dumps({**summary, "gap": result["gap"], "clips": result["clips"],
                      "folds": result["folds"], "report": args.out}, indent=1))
    return result


if __name__ == "__main__":
    main()
