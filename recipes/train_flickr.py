"""Train L3-Net on audio-visual correspondence (paper Sec. 3), Flickr-SoundNet style.

With no arguments this is the project's main job: it makes (once, cached in .cache/) a synthetic
audio-visual collection, prepares it, trains the "tiny" preset on the CPU, prints the held-out AVC
accuracy (held-out videos) next to the best reachable on that data, and exports the model into
saved_models/l3-tiny-synthetic.

    python recipes/train_flickr.py
    python recipes/train_flickr.py --data DIR_OR_SHARDS --preset paper --model-dir runs/x
    TF_CONFIG='{...}' python recipes/train_flickr.py --data SHARDS --strategy multiworker ...

The paper's run (real data): Adam lr 1e-4 with weight decay 1e-5 (Keras' Adam decays the weights
directly, decoupled from the gradient, as AdamW does), 16 pairs per replica, an epoch of 1000 steps
of the endless pair stream, AVC accuracy on held-out videos after every epoch. Rerunning the same
command resumes a killed run from its last checkpoint. `l3 train` takes the same flags.
"""
import argparse

from l3_keras.cli import add_train_arguments, run_train_arguments


def main(argv=None, **defaults):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    parser.set_defaults(**defaults)
    return run_train_arguments(parser.parse_args(argv))


if __name__ == "__main__":
    main()
