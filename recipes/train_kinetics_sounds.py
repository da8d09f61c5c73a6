"""Train L3-Net on a labelled collection (Kinetics-Sounds: one folder per class, 34 classes).

The same training as recipes/train_flickr.py; the videos are prepared with label_from="folder" and
the held-out AVC accuracy is also reported per class (the class of the frame's video).

    python recipes/train_kinetics_sounds.py --data KINETICS_SOUNDS_DIR --preset paper --model-dir runs/ks
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recipes import train_flickr  # noqa: E402


def main(argv=None):
    return train_flickr.main(argv, label_from="folder", per_class=True)


if __name__ == "__main__":
    main()
