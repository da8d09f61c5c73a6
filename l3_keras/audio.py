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

Both front ends run in float32 even under a mixed-precision policy: STFTSpectrogram rejects
bfloat16 input, and the log of a low-precision power loses the quiet bins.
"""
from __future__ import annotations

import keras
import numpy as np
import scipy.signal

from l3_keras.config import ModelConfig


def spectrogram_shape(cfg: ModelConfig):
    """(freq_bins, time_frames) that the front end produces for one input window."""
    if cfg.frontend == "stft":
        return cfg.n_fft // 2 + 1, 1 + (cfg.audio_samples - cfg.win_length) // cfg.hop_length
    # MelSpectrogram centres its frames (pads n_fft // 2 on both sides).
    return cfg.n_mels, 1 + cfg.audio_samples // cfg.hop_length


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
        waveform: float32 KerasTensor [batch, cfg.audio_samples] at cfg.sample_rate.
        cfg: the model config (front end kind and STFT / mel parameters).
        prefix: layer name prefix.

    Returns:
        float32 KerasTensor [batch, freq, time, 1], frequency on the first spatial axis so the
        last conv map of the paper model is 32 (freq) x 24 (time).
    """
    freq, time = spectrogram_shape(cfg)
    if cfg.frontend == "stft":
        x = keras.layers.Reshape((cfg.audio_samples, 1), name=f"{prefix}_expand", dtype="float32")(
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
