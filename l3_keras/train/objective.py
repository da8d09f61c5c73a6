"""What training minimises: the AVC loss on sampled pairs (the paper's) or on every pair of a batch.

    negatives="sampled"  model: the AVC model, [b, 2] softmax; y: 1 (positive) / 0 (negative);
                         per pair: cross-entropy.
    negatives="batch"    model: the AVC model's towers once per frame and per audio window, then
                         its fusion head on every (frame i, audio j) of the replica's batch:
                         [b, b, 2]; y: the pairs' video keys (`pairs.video_key`; the stream is all
                         positives). Target 1 on the diagonal, 0 off it; pairs (i, j != i) of one
                         video are skipped (they may sound the same moment). Per frame: half the
                         loss of its positive plus half the mean loss of its b - 1 negatives.

The towers are the expensive part (the head is two small dense layers), so "batch" scores b^2
pairs for the towers' cost of b: from scratch that is what gets the tiny model on real speech off
chance (README, AV-digits). Both models share every weight with the AVC model, which is what is
checkpointed, saved and exported; the held-out AVC accuracy is always the AVC model's on sampled
pairs. Losses and accuracies are per example ([b]) so that Keras and the custom loop average them
over the global batch alike.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import keras
from keras import ops

from l3_keras import models
from l3_keras.config import NEGATIVES, ModelConfig
from l3_keras.errors import check_choice


@dataclasses.dataclass(frozen=True)
class Objective:
    """model: what the optimizer trains (shares its weights with the AVC model);
    loss, accuracy: (y, model output) -> [b] per example (accuracy in [0, 1], balanced)."""

    model: keras.Model
    loss: Callable
    accuracy: Callable


def make_objective(l3: keras.Model, cfg: ModelConfig, negatives: str) -> Objective:
    """The objective of TrainConfig.negatives for the AVC model `l3` (`models.build_l3(cfg)`)."""
    check_choice("negatives", negatives, NEGATIVES)
    if negatives == "sampled":
        return Objective(l3, keras.losses.sparse_categorical_crossentropy, pair_accuracy)
    return Objective(all_pairs_model(l3, cfg), all_pairs_loss, all_pairs_accuracy)


def pair_accuracy(y, probs):
    """[b]: 1.0 where the arg-max class is the label."""
    return _hits(ops.reshape(y, [-1]), probs)


def _hits(targets, probs):
    """1.0 where the arg-max class of `probs` (last axis) is the target, else 0.0."""
    argmax = ops.cast(ops.argmax(probs, axis=-1), "int32")
    return ops.cast(ops.equal(argmax, ops.cast(targets, "int32")), "float32")


class CrossPairs(keras.layers.Layer):
    """([b, Dv], [b, Da]) -> [b * b, Dv + Da]: row i * b + j is frame i's embedding beside audio j's."""

    def call(self, inputs):
        v, a = inputs
        b = ops.shape(v)[0]
        return ops.concatenate([ops.repeat(v, b, axis=0), ops.tile(a, [b, 1])], axis=-1)

    def compute_output_shape(self, input_shape):
        (_, dv), (_, da) = input_shape
        return (None, dv + da)


class PairGrid(keras.layers.Layer):
    """([b * b, k], [b, ...]) -> [b, b, k]: CrossPairs' rows back on a frame x audio grid."""

    def call(self, inputs):
        x, reference = inputs
        b = ops.shape(reference)[0]
        return ops.reshape(x, (b, b, x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (None, None, input_shape[0][-1])


def all_pairs_model(l3: keras.Model, cfg: ModelConfig) -> keras.Model:
    """{"image" [b, ...], "audio" [b, ...]} -> softmax [b, b, 2] of frame i with audio j.

    Built from `l3`'s own layers (its towers, then fusion_fc1, fusion_fc2, fusion_softmax), so the
    two models share every weight.
    """
    vision = l3.get_layer(models.embedding_name(cfg, "vision")).output
    audio = l3.get_layer(models.embedding_name(cfg, "audio")).output
    x = CrossPairs(name="cross_pairs")([vision, audio])
    for name in ("fusion_fc1", "fusion_fc2", "fusion_softmax"):
        x = l3.get_layer(name)(x)
    # float32 like the AVC model's softmax: the loss is taken on these probabilities.
    grid = PairGrid(name="pair_grid", dtype="float32")([x, vision])
    return keras.Model(l3.input, grid, name=f"{l3.name}_all_pairs")


def _grid_weights(keys, b):
    """(targets int32 [b, b], negatives float32 [b, b]): the diagonal, and the pairs of two videos."""
    keys = ops.reshape(ops.cast(keys, "int32"), [-1])
    eye = ops.eye(b, dtype="int32")
    other_video = ops.cast(ops.not_equal(keys[:, None], keys[None, :]), "float32")
    return eye, other_video * (1.0 - ops.cast(eye, "float32"))


def _balanced(per_pair, negatives):
    """Per frame: half its positive's value plus half the mean over its negatives."""
    positive = ops.diagonal(per_pair)
    count = ops.maximum(ops.sum(negatives, axis=1), 1.0)
    return 0.5 * positive + 0.5 * ops.sum(per_pair * negatives, axis=1) / count


def all_pairs_loss(keys, probs):
    """[b]: the balanced cross-entropy of frame i against every audio window of the batch."""
    targets, negatives = _grid_weights(keys, ops.shape(probs)[0])
    ce = keras.losses.sparse_categorical_crossentropy(targets, probs)
    return _balanced(ce, negatives)


def all_pairs_accuracy(keys, probs):
    """[b]: frame i's balanced accuracy over its positive and its negatives."""
    targets, negatives = _grid_weights(keys, ops.shape(probs)[0])
    return _balanced(_hits(targets, probs), negatives)
