"""Spectrogram front ends: waveform [batch, samples] -> [batch, freq, time, 1], inside the graph.

Built only from Keras' own layers (`STFTSpectrogram`, `MelSpectrogram`, `Reshape`, `Permute`), so a
saved model loads with plain `keras.models.load_model` and no custom objects.

The paper's front end (Sec. 3.2): 1 s at 48 kHz, 0.01 s (480-sample) Hann window, half overlap
(hop 240), FFT 512 -> log magnitude of 257 frequency x 199 time bins. Frames are taken without
centre padding ("valid"): 1 + (48000 - 480) // 240 = 199.

Log floor: Keras' STFTSpectrogram(mode="log") computes log(max(sqrt(max(|X|^2, eps)), eps)) with
eps = keras.config.epsilon() = 1e-7, so a silent input gives log(sqrt(1e-7)) = -8.06, not -inf.
The mel front end uses power_to_db with min_power 1e-10 (a -100 dB floor) and no top_db floor (top_db=1000): Keras
takes the top_db reference as the maximum over the whole batch, which would make one clip's
spectrogram depend on the other clips batched with it.

OpenL3's front ends ("stft_db", "mel_db"; kapre 0.3.7 as wrapped by openl3 v0.4.2) are one
registered layer, `DecibelSpectrogram`: no Keras layer takes the log of a mel-projected magnitude
or floors it relative to each example's own maximum. Its frames come from `keras.ops.stft`, the
same FFT (`tf.signal.stft`, periodic Hann window) that kapre calls, so the spectrogram matches
kapre to float32 rounding. A `.keras` file holding it needs `import l3_keras` to load; a
SavedModel needs nothing of ours.

All front ends run in float32 even under a mixed-precision policy: STFTSpectrogram rejects
bfloat16 input, and the log of a low-precision power loses the quiet bins.
"""
from __future__ import annotations

import keras
import numpy as np
import scipy.signal

from l3_keras.config import ModelConfig


def spectrogram_shape(cfg: ModelConfig):
    """(freq_bins, time_frames) that the front end produces for one input (window + context)."""
    if cfg.frontend in ("stft_db", "mel_db"):
        freq = cfg.n_fft // 2 + 1 if cfg.frontend == "stft_db" else cfg.n_mels
        return freq, db_frames(cfg.audio_input_samples, cfg.n_fft, cfg.hop_length, cfg.pad_end)
    if cfg.frontend == "stft":
        return cfg.n_fft // 2 + 1, 1 + (cfg.audio_input_samples - cfg.win_length) // cfg.hop_length
    # MelSpectrogram centres its frames (pads n_fft // 2 on both sides).
    return cfg.n_mels, 1 + cfg.audio_input_samples // cfg.hop_length


def db_frames(samples, n_fft, hop_length, pad_end) -> int:
    """STFT frames of `DecibelSpectrogram`: ceil(samples / hop) with pad_end, else only full ones."""
    return -(-samples // hop_length) if pad_end else 1 + (samples - n_fft) // hop_length


def slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None) -> np.ndarray:
    """Mel filterbank float32 [n_fft // 2 + 1, n_mels]: Slaney's mel scale and area norm.

    The filters of librosa.filters.mel(htk=False, norm="slaney") and kapre's `filterbank_mel`
    (its default), computed in float64: triangles between mel-spaced edges, each scaled by
    2 / (its width in Hz) so every filter has the same area.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        log_part = min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep
        return np.where(f >= min_log_hz, log_part, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fft_freqs = np.linspace(0, sample_rate / 2.0, n_fft // 2 + 1)
    ramps = edges[:, None] - fft_freqs[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.T.astype(np.float32)


@keras.saving.register_keras_serializable(package="l3_keras")
class DecibelSpectrogram(keras.layers.Layer):
    """Waveform [b, samples] -> dB spectrogram [b, freq, time, 1] relative to each example's max.

    OpenL3's kapre front end: |STFT| (periodic Hann window of n_fft, no centring; with pad_end
    the end is zero-padded so there are ceil(samples / hop) frames), optionally projected onto a
    Slaney mel filterbank, then 10 * log10(max(x, amin)) minus the example's maximum, floored at
    -top_db. (10, not 20: OpenL3 applies kapre 0.1.4's power formula to the magnitude.)

    Args:
        n_fft: FFT and window length in samples.
        hop_length: samples between frames.
        pad_end: zero-pad the end (kapre's pad_end).
        n_mels: mel bands, or None for the linear-frequency spectrogram (n_fft // 2 + 1 bins).
        sample_rate: Hz; sets the mel filters.
        amin: magnitude floor before the log.
        top_db: dynamic range kept below the example's maximum.
    """

    def __init__(self, n_fft, hop_length, pad_end=False, n_mels=None, sample_rate=48000,
                 amin=1e-10, top_db=80.0, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.n_fft, self.hop_length, self.pad_end = int(n_fft), int(hop_length), bool(pad_end)
        self.n_mels, self.sample_rate = n_mels, int(sample_rate)
        self.amin, self.top_db = float(amin), float(top_db)
        self._mel = None
        if n_mels:
            self._mel = slaney_mel_filterbank(self.sample_rate, self.n_fft, int(n_mels))

    def call(self, waveform):
        x = keras.ops.cast(waveform, "float32")
        if self.pad_end:
            frames = -(-x.shape[-1] // self.hop_length)
            extra = (frames - 1) * self.hop_length + self.n_fft - x.shape[-1]
            x = keras.ops.pad(x, [[0, 0], [0, max(extra, 0)]])
        real, imag = keras.ops.stft(x, self.n_fft, self.hop_length, self.n_fft, "hann", center=False)
        spec = keras.ops.sqrt(real * real + imag * imag)  # [b, time, freq]
        if self._mel is not None:
            spec = keras.ops.matmul(spec, self._mel)
        db = 10.0 / np.log(10.0) * keras.ops.log(keras.ops.maximum(spec, self.amin))
        db = db - keras.ops.max(db, axis=(1, 2), keepdims=True)
        db = keras.ops.maximum(db, -self.top_db)
        return keras.ops.expand_dims(keras.ops.transpose(db, (0, 2, 1)), -1)

    def compute_output_shape(self, input_shape):
        frames = db_frames(input_shape[-1], self.n_fft, self.hop_length, self.pad_end)
        return (input_shape[0], self.n_mels or self.n_fft // 2 + 1, frames, 1)

    def get_config(self):
        return {
            **super().get_config(),
            "n_fft": self.n_fft, "hop_length": self.hop_length, "pad_end": self.pad_end,
            "n_mels": self.n_mels, "sample_rate": self.sample_rate, "amin": self.amin,
            "top_db": self.top_db,
        }


def _set_exact_dft_kernels(layer, cfg: ModelConfig):
    """Replaces the layer's DFT kernels by ones computed in float64.

    Keras builds them from float32 phase arguments 2*pi*n*k/N with n*k up to ~10^5, whose rounding
    (~5e-5 rad) leaks about 1e-5 of the peak into every bin: 8e-3 of log-magnitude error 60 dB
    below the peak. Reducing n*k modulo N in integers first makes the kernels exact to float32.
    """
    n = np.arange(cfg.win_length)[:, None]
    k = np.arange(cfg.n_fft // 2 + 1)[None, :]
    phase = -2.0 * np.pi * ((n * k) % cfg.n_fft) / cfg.n_fft
    window = scipy.signal.get_window("hann", cfg.win_length, fftbins=True)[:, None]
    layer.real_kernel.assign((np.cos(phase) * window)[:, None, :].astype(np.float32))
    layer.imag_kernel.assign((np.sin(phase) * window)[:, None, :].astype(np.float32))


def apply_frontend(waveform, cfg: ModelConfig, prefix: str = "audio"):
    """Turns waveform [batch, samples] into a log spectrogram [batch, freq, time, 1].

    Args:
        waveform: float32 KerasTensor [batch, cfg.audio_input_samples] at cfg.sample_rate.
        cfg: the model config (front end kind and STFT / mel parameters).
        prefix: layer name prefix.

    Returns:
        float32 KerasTensor [batch, freq, time, 1], frequency on the first spatial axis so the
        last conv map of the paper model is 32 (freq) x 24 (time).
    """
    freq, time = spectrogram_shape(cfg)
    if cfg.frontend in ("stft_db", "mel_db"):
        return DecibelSpectrogram(
            cfg.n_fft, cfg.hop_length, pad_end=cfg.pad_end,
            n_mels=cfg.n_mels if cfg.frontend == "mel_db" else None,
            sample_rate=cfg.sample_rate, top_db=cfg.top_db,
            name=f"{prefix}_spectrogram", dtype="float32",
        )(waveform)
    if cfg.frontend == "stft":
        x = keras.layers.Reshape((cfg.audio_input_samples, 1), name=f"{prefix}_expand", dtype="float32")(
            waveform
        )
        stft = keras.layers.STFTSpectrogram(
            mode="log",
            frame_length=cfg.win_length,
            frame_step=cfg.hop_length,
            fft_length=cfg.n_fft,
            window="hann",
            periodic=True,  # librosa / scipy "hann" windows are periodic
            scaling=None,  # raw |STFT|, as librosa.stft
            padding="valid",
            trainable=False,  # a fixed front end, as in the paper
            name=f"{prefix}_spectrogram",
            dtype="float32",
        )
        x = stft(x)  # [batch, time, freq]
        _set_exact_dft_kernels(stft, cfg)
        x = keras.layers.Permute((2, 1), name=f"{prefix}_freq_first", dtype="float32")(x)
    else:
        x = keras.layers.MelSpectrogram(
            fft_length=cfg.n_fft,
            sequence_stride=cfg.hop_length,
            sequence_length=cfg.win_length,
            sampling_rate=cfg.sample_rate,
            num_mel_bins=cfg.n_mels,
            min_freq=0.0,
            power_to_db=True,
            # Keras' top_db floor is relative to the BATCH maximum (see module docstring); 1000 dB
            # lies far below the -100 dB min_power floor, so it never binds.
            top_db=1000.0,
            name=f"{prefix}_spectrogram",
            dtype="float32",
        )(waveform)  # [batch, mels, time]
    return keras.layers.Reshape((freq, time, 1), name=f"{prefix}_spectrogram_4d", dtype="float32")(x)
