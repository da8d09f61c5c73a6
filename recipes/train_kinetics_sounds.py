"""Train L3-Net on a labelled collection (Kinetics-Sounds: one folder per class, 34 classes).

The same training as recipes/train_flickr.py; the videos are prepared with label_from="folder" and
the held-out AVC accuracy is also reported per class (the class of the frame's video).

    python recipes/train_kinetics_sounds.py --data KINETICS_SOUNDS_DIR --preset paper --model-dir runs/ks
"""
import argparse

from l3_keras.cli import add_train_arguments, run_train_arguments


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    parser.set_defaults(label_from="folder", per_class=True)
    return run_train_arguments(parser.parse_args(argv))


if __name__ == "__main__":
    main()
