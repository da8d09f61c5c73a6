"""The best AVC accuracy reachable on a synthetic or scene collection, by Monte Carlo.

A negative pairs a frame with a 1 s window from ANOTHER clip. When that window happens to hold the
sound of the kind on screen (or, for a frame between events, some quiet background), the pair looks
exactly like a positive and no model can tell them apart. The Bayes ceiling is therefore

    accuracy* = 1/2 * sum_f max(P(f | positive), P(f | negative))

over what a pair shows: f = (kind on screen or "none", the set of kinds heard in the window,
whether the window holds a silent gap). The probabilities are estimated by drawing pairs the way
`data.pairs.sample_record` / `pair_block` do (frame uniform in time, positive window uniform among
those that contain it, negative window uniform in another clip) from clips drawn by
`synthetic.random_events`, gaps included.

Rule of thumb: with K uniform kinds and no gaps, a negative matches by chance about 1/K of the time
(a little more, since a 1 s window often spans two events), so accuracy* ~ 1 - 0.5 * 1.4 / K.
"""
from __future__ import annotations

import collections

import numpy as np

from l3_keras.data import synthetic


def _heard(events, start, end):
    """(kinds sounding in [start, end), whether part of it is between events)."""
    kinds, covered = set(), 0.0
    for e in events:
        lo, hi = max(start, e["start"]), min(end, e["end"])
        if hi > lo:
            kinds.add(e["kind"])
            covered += hi - lo
    return frozenset(kinds), covered < (end - start) - 1e-3


def _seen(events, t):
    return next((e["kind"] for e in events if e["start"] <= t < e["end"]), None)


def avc_ceiling(spec: synthetic.ClipSpec, window: float = 1.0, pairs: int = 40000,
                clips: int = 400, seed: int = 0) -> float:
    """Monte Carlo Bayes-optimal AVC accuracy for `synthetic.make_collection(..., spec)`.

    Args:
        spec: the collection's clips (kinds, seconds, event lengths and gaps count here).
        window: audio window in seconds (1 s in the paper).
        pairs: pairs drawn per class; the estimate's standard error is about 0.2 / sqrt(pairs).
        clips: distinct random clips to draw from.
        seed: seeds the clips and the pairs.

    Returns:
        the ceiling in [0.5, 1].
    """
    rng = np.random.default_rng(seed)
    collection = [synthetic.random_events(spec.seconds, spec.kinds, rng,
                                          min_seconds=spec.event_seconds[0],
                                          max_seconds=spec.event_seconds[1], max_gap=spec.max_gap)
                  for _ in range(clips)]
    return collection_ceiling([(events, events) for events in collection], spec.seconds, window,
                              pairs, rng)


def collection_ceiling(clips, seconds: float, window: float = 1.0, pairs: int = 40000,
                       rng=None) -> float:
    """Monte Carlo Bayes-optimal AVC accuracy of given clips (the core of `avc_ceiling`).

    Args:
        clips: one (seen, heard) pair of event lists a clip: `seen` events say which kind is on
            screen when, `heard` events which kind sounds when (the same list for `synthetic`
            clips; a scene's recordings, with pauses between them, for `data.scenes`). Events are
            dicts with "kind", "start" and "end" (seconds).
        seconds: clip length.
        rng: numpy Generator (default seeded with 0).

    Returns:
        the ceiling in [0.5, 1].
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    counts = {True: collections.Counter(), False: collections.Counter()}
    for _ in range(pairs):
        a, b = rng.choice(len(clips), 2, replace=False)
        t = rng.uniform(0.0, seconds)
        lo, hi = max(0.0, t - window), min(t, seconds - window)
        pos_start, neg_start = rng.uniform(lo, hi), rng.uniform(0.0, seconds - window)
        frame = _seen(clips[a][0], t)
        counts[True][(frame, *_heard(clips[a][1], pos_start, pos_start + window))] += 1
        counts[False][(frame, *_heard(clips[b][1], neg_start, neg_start + window))] += 1
    keys = set(counts[True]) | set(counts[False])
    return 0.5 * sum(max(counts[True][k], counts[False][k]) for k in keys) / pairs
