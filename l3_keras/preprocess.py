"""Input preprocessing in TensorFlow ops, shared by the serving graph and the embedding API.

The same functions run eagerly in `embed.get_image_embedding` and inside the SavedModel signatures
of `export`, so an image embedded in Python and the same image sent to TF Serving give the same
embedding. Only standard TF ops (no py_function), so TF Serving can run every signature.

Image convention (paper Sec. 3.1 takes 224x224 crops of frames): scale the image so that it
covers the model's (height, width) (for a square model: its short side becomes the model's size;
bilinear, antialiased), then take the central crop; uint8 values are divided by 255.
"""
from __future__ import annotations

import tensorflow as tf


def fit_images(images, size):
    """Resizes to cover `size`, then centre-crops.

    Args:
        images: uint8 [batch, h, w, 3] in 0..255, or float [batch, h, w, 3] in [0, 1]; one size
            for the whole batch, any (h, w).
        size: (height, width) of the model's image input.

    Returns:
        float32 [batch, height, width, 3] in [0, 1].
    """
    images = tf.convert_to_tensor(images)
    x = tf.cast(images, tf.float32)
    if images.dtype == tf.uint8:
        x = x / 255.0
    target_h, target_w = size
    h = tf.cast(tf.shape(x)[1], tf.float64)
    w = tf.cast(tf.shape(x)[2], tf.float64)
    scale = tf.maximum(target_h / h, target_w / w)
    # max() guards against rounding one side below the target.
    new_h = tf.maximum(target_h, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(target_w, tf.cast(tf.round(w * scale), tf.int32))
    x = tf.image.resize(x, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top = (new_h - target_h) // 2
    left = (new_w - target_w) // 2
    x = x[:, top : top + target_h, left : left + target_w, :]
    return tf.ensure_shape(x, [None, target_h, target_w, 3])


def decode_images(encoded, size):
    """Encoded JPEG / PNG / GIF / BMP / WebP images -> model input.

    Args:
        encoded: string [batch], one encoded image each (sizes may differ; grayscale and RGBA
            are converted to RGB; animations are refused by decode_image).
        size: (height, width) of the model's image input.

    Returns:
        float32 [batch, height, width, 3] in [0, 1].
    """

    def one(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return fit_images(image[None], size)[0]

    spec = tf.TensorSpec([*size, 3], tf.float32)
    return tf.map_fn(one, encoded, fn_output_signature=spec)


def resample_fft(x, num):
    """Band-limited resampling of one signal to `num` samples (FFT method, like scipy's resample).

    Args:
        x: float32 [n], n > 0.
        num: output length (a Python int or an int32 scalar tensor).

    Returns:
        float32 [num].
    """
    n = tf.shape(x)[0]
    num = tf.convert_to_tensor(num, tf.int32)
    spectrum = tf.signal.rfft(x)
    # Keep the bins both lengths can represent; the rest are zero (low-pass when downsampling).
    keep = tf.minimum(n, num) // 2 + 1
    spectrum = tf.pad(spectrum[:keep], [[0, num // 2 + 1 - keep]])
    y = tf.signal.irfft(spectrum, fft_length=num[None])
    return y * (tf.cast(num, tf.float32) / tf.cast(n, tf.float32))


def decode_wav_file(encoded, sample_rate):
    """One 16-bit PCM WAV file of any length, rate and channel count -> mono float32 [n] at
    `sample_rate`.

    Down-mixed by the channel mean; at another rate, resampled in the graph with one
    `resample_fft` over the whole file to round(n * sample_rate / rate) samples (soxr's length;
    the Python API resamples with soxr instead). At the model's rate the samples pass
    unchanged: an FFT round trip over minutes of audio is only exact to ~1e-6, which the log
    front end turns into 3e-4 differences. (The tf.cond that `decode_wav_windows` avoids
    misbehaved inside its map_fn; the whole-file tests run both branches through a SavedModel.)

    Args:
        encoded: string scalar, the WAV file.
        sample_rate: the model's rate in Hz.

    Raises:
        InvalidArgumentError: the file has no samples (message names the input).
    """
    audio, rate = tf.audio.decode_wav(encoded)
    n = tf.shape(audio)[0]
    with tf.control_dependencies(
        [tf.debugging.assert_positive(n, message="audio_bytes: the WAV file has no samples")]
    ):
        mono = tf.reduce_mean(audio, axis=1)
    num = tf.cast(tf.floor(tf.cast(n, tf.float64) * sample_rate / tf.cast(rate, tf.float64) + 0.5), tf.int32)
    return tf.cond(tf.equal(rate, sample_rate), lambda: mono,
                   lambda: resample_fft(mono, tf.maximum(num, 1)))


def decode_wav_windows(encoded, sample_rate, samples):
    """16-bit PCM WAV files -> the first window of each, mono, at the model's rate.

    Each file is down-mixed to mono; its first `samples / sample_rate` seconds are taken
    (zero-padded when shorter) and, when the file's rate differs, resampled in the graph with
    `resample_fft`. The Python API (`embed`) resamples with soxr instead; both are band-limited.

    Args:
        encoded: string [batch], one WAV file each (any rate and channel count).
        sample_rate: the model's rate in Hz.
        samples: the model's window length in samples.

    Returns:
        float32 [batch, samples].
    """
    seconds = samples / sample_rate

    def one(data):
        audio, rate = tf.audio.decode_wav(data)
        tf.debugging.assert_positive(
            tf.shape(audio)[0], message="audio_bytes: the WAV file has no samples"
        )
        mono = tf.reduce_mean(audio, axis=1)
        n = tf.cast(tf.round(tf.cast(rate, tf.float64) * seconds), tf.int32)
        mono = mono[:n]
        mono = tf.pad(mono, [[0, n - tf.shape(mono)[0]]])
        # Always resampled, even at the model's rate (then an FFT round trip, exact to ~1e-7):
        # a tf.cond on the rate ran correctly eagerly but, inside a tf.function, returned the
        # first `samples` samples unresampled for a 44.1 kHz file (cause not pinned down).
        return resample_fft(mono, samples)

    spec = tf.TensorSpec([samples], tf.float32)
    return tf.map_fn(one, encoded, fn_output_signature=spec)
