"""Typed configuration: model presets, data preparation and training settings.

Every config is a frozen dataclass with a JSON round trip (`to_json` / `from_json`) so that the
resolved settings can be stored beside each run and export. Presets are looked up by name with
`get_preset`; unknown names raise `L3Error` listing the valid ones.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional, Tuple

from l3_keras.errors import L3Error, check_choice

FRONTENDS = ("stft", "mel", "stft_db", "mel_db")
FRAMINGS = ("l3", "openl3")
LR_SCHEDULES = ("constant", "cosine")
NEGATIVES = ("sampled", "batch")


class _JsonMixin:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise L3Error(f"Unknown {cls.__name__} keys {sorted(unknown)}; expected {sorted(fields)}.")
        # JSON has no tuples: restore them where the field default is a tuple.
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """L3-Net architecture (paper Sec. 3.2 / Fig. 2).

    Attributes:
        name: preset name this config came from.
        sample_rate: audio rate in Hz the model consumes (48 kHz in the paper).
        audio_seconds: length of the audio input (1 s in the paper).
        frontend: "stft" (log-magnitude spectrogram, paper), "mel" (log-mel), or OpenL3's kapre
            front ends "stft_db" / "mel_db": 10 log10 of the STFT magnitude (or of its Slaney mel
            projection) minus the example's maximum, floored at -top_db (`audio.DecibelSpectrogram`).
        n_fft, win_length, hop_length: STFT parameters in samples (paper: 512, 480, 240).
        n_mels: mel bands for the "mel" and "mel_db" front ends.
        top_db: dynamic range in dB of the "*_db" front ends (OpenL3: 80).
        pad_end: zero-pad the end so frames cover the whole window: ceil(S / hop) frames ("*_db").
        image_size: (height, width) of the frame input (paper: 224x224).
        filters: conv filters per block, the last is the embedding size (paper: 64..512).
        convs_per_block: conv3x3-BN-ReLU units per block (paper: 2).
        fusion_units: width of the fusion hidden layer (paper: 128).
        conv_bias: convolutions have biases (OpenL3) besides the BatchNorm shift.
        last_conv_linear: the tower's last conv has no BatchNorm/ReLU (OpenL3's embedding layer).
        image_input_bn: a BatchNorm on the rescaled image before the first conv (OpenL3).
        relu_before_bn: conv names whose unit runs conv -> ReLU -> BN (OpenL3's image network
            does this in "vision_block1_conv2" only).
        audio_transfer_grid, image_transfer_grid: cells the last conv map is max-pooled to for
            the transfer features (paper Sec. 4.2: 4x3 -> 6144-D audio; OpenL3 image: 4x4 -> 8192).
        framing: how the embedding API cuts audio into windows: "l3" (windows centred on k * hop
            up to the end) or "openl3" (OpenL3's get_audio_embedding: see `embed.frame_audio`).
        audio_context_seconds: real audio the audio tower also sees on each side of its
            window (0: the paper's lone window). Non-zero makes an edge-free model: the last
            conv map is cropped back to the window's own cells before pooling, so no cell it
            pools depends on padding and running the tower once over a file
            (`embed_stream`, mode "shared") gives exactly the per-window embeddings. A whole
            number of last-map cells (hop_length x 2^(blocks - 1) samples), at least the
            tower's receptive field (`models.receptive_frames`).
    """

    name: str = "paper"
    sample_rate: int = 48000
    audio_seconds: float = 1.0
    frontend: str = "stft"
    n_fft: int = 512
    win_length: int = 480
    hop_length: int = 240
    n_mels: Optional[int] = None
    image_size: Tuple[int, int] = (224, 224)
    filters: Tuple[int, ...] = (64, 128, 256, 512)
    convs_per_block: int = 2
    fusion_units: int = 128
    top_db: float = 80.0
    pad_end: bool = False
    conv_bias: bool = False
    last_conv_linear: bool = False
    image_input_bn: bool = False
    relu_before_bn: Tuple[str, ...] = ()
    audio_transfer_grid: Tuple[int, int] = (4, 3)
    image_transfer_grid: Tuple[int, int] = (4, 3)
    framing: str = "l3"
    audio_context_seconds: float = 0.0

    def __post_init__(self):
        check_choice("frontend", self.frontend, FRONTENDS)
        check_choice("framing", self.framing, FRAMINGS)
        if self.frontend in ("mel", "mel_db") and not self.n_mels:
            raise L3Error(f"Preset {self.name!r}: the {self.frontend!r} front end needs n_mels > 0.")
        if self.win_length > self.n_fft:
            raise L3Error(f"win_length {self.win_length} must be <= n_fft {self.n_fft}.")
        cell = self.hop_length * 2 ** (len(self.filters) - 1)
        if self.audio_context_samples % cell or self.audio_context_samples < 0:
            raise L3Error(
                f"audio_context_seconds {self.audio_context_seconds} must be a non-negative "
                f"multiple of the last map's cell, {cell / self.sample_rate:g} s for {self.name!r}."
            )

    @property
    def audio_samples(self) -> int:
        """Samples in one audio input window."""
        return int(round(self.sample_rate * self.audio_seconds))

    @property
    def audio_context_samples(self) -> int:
        """Samples of context on each side of the window (0 unless edge-free)."""
        return int(round(self.sample_rate * self.audio_context_seconds))

    @property
    def audio_input_samples(self) -> int:
        """Samples the audio tower takes: the window plus its context on both sides."""
        return self.audio_samples + 2 * self.audio_context_samples

    @property
    def embedding_dim(self) -> int:
        return self.filters[-1]


_OPENL3 = dict(
    hop_length=242,
    conv_bias=True,
    last_conv_linear=True,
    image_input_bn=True,
    relu_before_bn=("vision_block1_conv2",),
    image_transfer_grid=(4, 4),
    framing="openl3",
)
_OPENL3_FRONTENDS = {
    "linear": dict(frontend="stft_db", n_fft=512, win_length=512),  # 257 x 197
    "mel128": dict(frontend="mel_db", n_fft=2048, win_length=2048, n_mels=128, pad_end=True),
    "mel256": dict(frontend="mel_db", n_fft=2048, win_length=2048, n_mels=256, pad_end=True),
}

PRESETS = {
    "paper": ModelConfig(),
    # OpenL3 (Cramer et al. 2019, marl/openl3 v0.4.2 models.py): kapre front ends in dB relative
    # to the example's maximum (80 dB range), biased convs, an input BatchNorm on both towers, the
    # last conv linear, and OpenL3's windowing in the embedding API. `l3 import-openl3` loads its
    # published weights into these.
    **{
        f"openl3-{repr_}": ModelConfig(name=f"openl3-{repr_}", **_OPENL3, **front)
        for repr_, front in _OPENL3_FRONTENDS.items()
    },
    # Scaled down so that it trains in minutes on 2 CPU cores: 16 kHz, 64 log-mel bands with a 25 ms
    # window and 20 ms hop (64 x 51; the README says what a 10 ms hop costs), 64x64 frames, 8x
    # narrower filters.
    "tiny": ModelConfig(
        name="tiny",
        sample_rate=16000,
        frontend="mel",
        n_fft=512,
        win_length=400,
        hop_length=320,
        n_mels=64,
        image_size=(64, 64),
        filters=(16, 32, 64, 128),
        fusion_units=64,
    ),
}


def get_preset(name: str) -> ModelConfig:
    """Returns the named ModelConfig preset.

    Raises:
        L3Error: if `name` is not a preset; the message lists the presets.
    """
    check_choice("preset", name, tuple(PRESETS))
    return PRESETS[name]


@dataclasses.dataclass(frozen=True)
class DataConfig(_JsonMixin):
    """How videos become records and records become pairs.

    These are facts of a prepared shard set: `prepare` records them in its manifest, and
    `shards.check` reads them back from there. The crop the pairs take is the model's image_size.

    Attributes:
        sample_rate: audio rate stored in the records (must equal the model's).
        fps: frames kept per second of video.
        frame_short_side: stored frames are resized so their short side is this (paper: 256, for
            random 224 x 224 crops); at least the model's image size.
        max_seconds: keep only the first N seconds of each video (Flickr-SoundNet: 10); None = all.
        jpeg_quality: quality of the stored frames.
        shard_megabytes: target size of one TFRecord shard.
    """

    sample_rate: int = 48000
    fps: float = 4.0
    frame_short_side: int = 256
    max_seconds: Optional[float] = 10.0
    jpeg_quality: int = 90
    shard_megabytes: int = 256

    @classmethod
    def from_dict(cls, d: dict):
        # Manifests written before the crop moved to the model (its image_size) carry crop_size.
        return super().from_dict({k: v for k, v in d.items() if k != "crop_size"})

    @classmethod
    def for_model(cls, model: ModelConfig, **changes) -> "DataConfig":
        """The settings to decode videos for `model`: its sample rate, and stored frames whose
        short side is the paper's 256 / 224 times the model's (larger) image side."""
        base = cls(sample_rate=model.sample_rate,
                   frame_short_side=int(round(max(model.image_size) * 256 / 224)))
        return base.replace(**changes)


def check_fits(model: ModelConfig, sample_rate: int, frame_short_side: int, source: str) -> None:
    """Raises L3Error unless data at `sample_rate` with frames of `frame_short_side` fits `model`.

    The one check that prepared data (`shards.check`) or decoding settings (`pairs`' direct mode)
    suit a model: the same sample rate (another would train on the wrong pitch), and frames
    large enough for the model's image_size crop.

    Args:
        source: names the data in the message, e.g. "The training shards".
    """
    if sample_rate != model.sample_rate:
        raise L3Error(f"{source} hold audio at {sample_rate} Hz but preset {model.name!r} takes "
                      f"{model.sample_rate} Hz; prepare with --preset {model.name} "
                      "(DataConfig.for_model) or choose the preset the data was made for.")
    if frame_short_side < max(model.image_size):
        height, width = model.image_size
        raise L3Error(f"{source} hold frames with a {frame_short_side} px short side, smaller than "
                      f"preset {model.name!r} crops ({height}x{width}); prepare with --preset "
                      f"{model.name} (DataConfig.for_model).")


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """Optimisation settings (paper Sec. 3.3: Adam, lr 1e-4, weight decay 1e-5, 16 pairs/GPU).

    Attributes:
        learning_rate: Adam step size (paper: 1e-4), the peak of the schedule.
        lr_schedule: "constant" (paper) or "cosine" (decays to 0 over total_steps).
        weight_decay: Keras Adam's DECOUPLED weight decay (AdamW-style, applied to the weights
            directly, not added to the loss as an L2 term); paper: 1e-5.
        batch_per_replica: pairs per replica per step (paper: 16 per GPU).
        global_batch: pairs per step over all replicas; None = batch_per_replica x replicas.
            Must divide evenly over the replicas.
        steps_per_epoch: an epoch is this many steps of the endless pair stream.
        epochs: epochs to train; total steps = epochs x steps_per_epoch.
        validation_pairs: the fixed held-out pairs evaluated after every epoch.
        pairs_per_video: training pairs drawn from each parsed record, which amortises reading a
            whole video's audio and frames (shuffled afterwards, so batches still mix videos).
        val_fraction: share of the shards (whole videos) held out when no validation data is given.
        checkpoint_every: steps between checkpoints (also one at every epoch end); 0 = epochs only.
        log_every: steps between progress lines and TensorBoard batch summaries.
        mixed_precision: None (float32), "bf16" or "fp16".
        strategy: "auto" (GPUs mirrored, else one device), "mirrored", "multiworker", "default".
        seed: seeds the model's initial weights and the pair stream.
        negatives: "sampled" (paper): the stream is half positives, half negatives whose audio
            is another video's, and the loss scores each pair once. "batch": the stream is all
            positives and the loss scores every frame of a replica's batch with every audio of
            it: b positives and b(b-1) negatives (pairs of one video skipped), weighted half and
            half (`train.objective`). Same towers, head and held-out AVC; from scratch it learns
            far more per tower pass (the AV-digits section of the README has the figures).
    """

    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # "constant" | "cosine"
    weight_decay: float = 1e-5
    batch_per_replica: int = 16
    global_batch: Optional[int] = None
    steps_per_epoch: int = 1000
    epochs: int = 100
    validation_pairs: int = 2048
    pairs_per_video: int = 4
    val_fraction: float = 0.1
    checkpoint_every: int = 500
    log_every: int = 50
    mixed_precision: Optional[str] = None  # None | "bf16" | "fp16"
    strategy: str = "auto"  # "auto" | "mirrored" | "multiworker" | "default"
    seed: int = 0
    negatives: str = "sampled"  # "sampled" | "batch"

    def __post_init__(self):
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("negatives", self.negatives, NEGATIVES)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch
