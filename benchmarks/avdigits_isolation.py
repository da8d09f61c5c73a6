"""AV-digits in isolation: which part of the task keeps the tiny L3 at chance? Prints accuracies.

No clips, shards or pair stream: every batch is drawn in memory from the FSDD recordings the way
`data.scenes` builds its audio (trimmed recordings of one digit back to back, 0.05-0.25 s pauses,
+-6 dB, over noise at -55 to -40 dBFS; a random 1 s window) and pictures (`scenes.draw_glyph` /
`draw_emblem` on `scenes.textured_background`, drawn at the model's image size). Speakers george,
jackson and lucas, recordings 0-39, train; their recordings 40-49 ("seen speakers") and all of
nicolas's ("unheard speaker") are evaluated.

    --task supervised   the audio tower + a 10-way softmax on digit labels: can it learn digits?
    --task avc          the L3 model on correspondence pairs (half positives: the picture's digit
                        is heard; negatives: a random digit is heard)
    --negatives batch   (with --task avc) in-batch negatives (`train.objective`): training batches
                        are all positives and every picture is scored against every window;
                        evaluation stays on the half-and-half pairs
    --vision glyph|emblem|cued   what shows the digit (cued: glyphs in their digit's own hue)
    --clip-identities N          training pictures and noise levels come from N fixed "clips"
                                 (a background and a noise level each; positives share a clip,
                                 negatives do not), as in a collection of N scene clips;
                                 0 draws both afresh for every pair

    python benchmarks/avdigits_isolation.py --fsdd ../shared/data/audio-labeled/fsdd --task avc \\
        --vision emblem --steps 300
    python benchmarks/avdigits_isolation.py --fsdd ../shared/data/audio-labeled/fsdd --task avc \
        --negatives batch --steps 1500
"""
import argparse
import os
import re
import time

import numpy as np

TRAIN_SPEAKERS, UNHEARD = ("george", "jackson", "lucas"), "nicolas"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fsdd", required=True)
    p.add_argument("--task", choices=["supervised", "avc"], default="avc")
    p.add_argument("--vision", choices=["glyph", "emblem", "cued"], default="glyph")
    p.add_argument("--clip-identities", type=int, default=0)
    p.add_argument("--negatives", choices=["sampled", "batch"], default="sampled")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class Batches:
    """Draws (inputs, labels) batches in memory; see the module docstring."""

    def __init__(self, args, cfg):
        from l3_keras.data import labelled

        self.args, self.cfg = args, cfg
        self.rng = np.random.default_rng(args.seed)
        items = labelled.list_labelled(args.fsdd, "pattern", labelled.FSDD_PATTERN)
        self.digits = sorted({i.label for i in items})
        pools = {"train": {}, "seen": {}, "unheard": {}}
        for item in items:
            speaker = labelled.group_of(item, "speaker")
            index = int(re.search(r"_(\d+)\.wav$", item.path).group(1))
            part = ("unheard" if speaker == UNHEARD else "train" if index < 40 else "seen")
            pools[part].setdefault(item.label, []).append(item.path)
        self.pools = pools
        self.clips = [self._clip() for _ in range(args.clip_identities)]

    def _clip(self):
        from l3_keras.data import scenes

        return (scenes.textured_background(tuple(self.cfg.image_size), self.rng),
                10 ** (self.rng.uniform(-55, -40) / 20))

    def window(self, paths, noise):
        from l3_keras.data import scenes

        sr, rng = self.cfg.sample_rate, self.rng
        audio = rng.normal(0, noise, 3 * sr).astype(np.float32)
        t = int(rng.uniform(0, 0.25) * sr)
        while t < 3 * sr:
            wave = scenes.load_recording(paths[rng.integers(len(paths))], sr)
            wave = (wave * 10 ** (rng.uniform(-6, 6) / 20))[:3 * sr - t]
            audio[t:t + len(wave)] += wave
            t += len(wave) + int(rng.uniform(0.05, 0.25) * sr)
        start = rng.integers(0, 2 * sr)
        return np.clip(audio[start:start + sr], -1, 1)

    def picture(self, digit, background):
        from l3_keras.data import scenes

        frame, size = background.copy(), (0.45, 0.8)
        if self.args.vision == "emblem":
            scenes.draw_emblem(frame, digit, self.rng, size)
        else:
            hue = self.digits.index(digit) / len(self.digits) if self.args.vision == "cued" else None
            scenes.draw_glyph(frame, digit, self.rng, size, hue)
        return frame.astype(np.float32) / 255

    def __call__(self, part, n, positives_only=False):
        """With positives_only every pair is a positive and its label is its index: each pair
        its own "video" for the in-batch objective."""
        rng, pool, d = self.rng, self.pools[part], self.digits
        images, audio, labels = [], [], []
        for i in range(n):
            seen = d[rng.integers(len(d))]
            heard = (seen if self.args.task == "supervised" or positives_only or i % 2 == 0
                     else d[rng.integers(len(d))])
            if part == "train" and self.clips:
                c = int(rng.integers(len(self.clips)))
                other = c if i % 2 == 0 or positives_only else (c + 1 + int(rng.integers(len(self.clips) - 1))) % len(self.clips)
                (background, _), noise = self.clips[c], self.clips[other][1]
            else:
                background, noise = self._clip()
            audio.append(self.window(pool[heard], noise))
            if self.args.task == "supervised":
                labels.append(d.index(heard))
            else:
                images.append(self.picture(seen, background))
                labels.append(i if positives_only else int(heard == seen))
        x = np.stack(audio) if self.args.task == "supervised" else {
            "image": np.stack(images), "audio": np.stack(audio)}
        return x, np.array(labels)


def build(args, cfg):
    """(the model evaluated, compiled; the model trained, compiled): the same model unless the
    in-batch objective trains the AVC model's all-pairs twin."""
    import keras

    from l3_keras import models
    from l3_keras.train import objective

    if args.task == "avc":
        model = models.build_l3(cfg)
    else:
        model = keras.Sequential([models.build_audio_tower(cfg),
                                  keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if args.negatives == "sampled" or args.task != "avc":
        return model, model
    obj = objective.make_objective(model, cfg, "batch")
    obj.model.compile(keras.optimizers.Adam(args.learning_rate), obj.loss,
                      metrics=[keras.metrics.MeanMetricWrapper(obj.accuracy, name="accuracy")])
    return model, obj.model


def main(argv=None):
    args = parse(argv)
    import keras

    from l3_keras.config import get_preset

    cfg = get_preset("tiny")
    keras.utils.set_random_seed(args.seed)
    batches = Batches(args, cfg)
    model, trained = build(args, cfg)
    in_batch = trained is not model
    evals = {part: batches(part, 400) for part in ("seen", "unheard")}
    t0, hits = time.time(), []
    for step in range(1, args.steps + 1):
        _, acc = trained.train_on_batch(*batches("train", args.batch, positives_only=in_batch))
        hits.append(acc)
        if step % 100 == 0 or step == args.steps:
            scores = {p: model.evaluate(*xy, verbose=0)[1] for p, xy in evals.items()}
            print(f"{args.task} {args.vision} {args.negatives} clips={args.clip_identities} step "
                  f"{step}: training "
                  f"batches {np.mean(hits[-100:]):.3f}, seen speakers {scores['seen']:.3f}, "
                  f"unheard speaker {scores['unheard']:.3f}; {time.time() - t0:.0f} s, load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
