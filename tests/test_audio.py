"""The in-graph spectrogram front end against librosa (the oracle), and its edge cases.

Frame alignment: Keras' STFTSpectrogram frames a 480-sample window at k * 240 and zero-pads it to
512 at the END; librosa (center=False, n_fft=512, win_length=480) centres the 480-sample window
inside each 512-sample frame, i.e. 16 zeros on each side. Padding the signal by 16 samples at both
ends before librosa makes librosa's frame k cover exactly samples [240k, 240k + 480) like Keras';
the magnitudes then agree bin for bin (zero-padding position only changes the phase).
"""
import keras
import librosa
import numpy as np
import pytest

from l3_keras.audio import apply_frontend, spectrogram_shape
from l3_keras.config import get_preset

PAPER = get_preset("paper")
TOLERANCE = 1e-3  # max |log-magnitude difference| over bins within 60 dB of the maximum


@pytest.fixture(scope="module")
def frontend():
    waveform = keras.Input((PAPER.audio_samples,))
    return keras.Model(waveform, apply_frontend(waveform, PAPER))


def librosa_log_magnitude(y, cfg=PAPER):
    pad = (cfg.n_fft - cfg.win_length) // 2
    mag = np.abs(
        librosa.stft(
            np.pad(y, (pad, pad)),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window="hann",
            center=False,
        )
    )
    return mag


def assert_matches_librosa(frontend, y):
    ours = frontend.predict(y[None].astype(np.float32), verbose=0)[0, :, :, 0]
    mag = librosa_log_magnitude(y.astype(np.float64))
    assert ours.shape == mag.shape == (257, 199)
    db = 20 * np.log10(np.maximum(mag, 1e-30))
    within_60db = db >= db.max() - 60
    diff = np.abs(ours - np.log(mag))[within_60db]
    assert within_60db.sum() > 1000
    assert diff.max() <= TOLERANCE, f"max |diff| {diff.max():.2e} over {within_60db.sum()} bins"


def test_paper_spectrogram_shape():
    assert spectrogram_shape(PAPER) == (257, 199)


def test_matches_librosa_on_synthetic_chirp(frontend):
    t = np.arange(PAPER.audio_samples) / PAPER.sample_rate
    y = 0.5 * librosa.chirp(fmin=200, fmax=16000, sr=PAPER.sample_rate, duration=1.0)[: t.size]
    y += 0.01 * np.random.default_rng(0).standard_normal(t.size)
    assert_matches_librosa(frontend, y)


def test_matches_librosa_on_real_chirp(frontend, real_media):
    # The real file is 44.1 kHz; librosa resamples it to the model's 48 kHz.
    y, _ = librosa.load(real_media / "fixtures/openl3/chirp_44k.wav", sr=PAPER.sample_rate)
    assert_matches_librosa(frontend, y[: PAPER.audio_samples])


@pytest.mark.parametrize("preset", ["paper", "openl3-mel128", "tiny"])
def test_silence_is_finite(preset):
    cfg = get_preset(preset)
    waveform = keras.Input((cfg.audio_samples,))
    model = keras.Model(waveform, apply_frontend(waveform, cfg))
    out = model.predict(np.zeros((1, cfg.audio_samples), np.float32), verbose=0)
    assert out.shape == (1, *spectrogram_shape(cfg), 1)
    assert np.isfinite(out).all()
    if preset == "paper":  # log(sqrt(1e-7)): Keras' epsilon floor under the magnitude
        np.testing.assert_allclose(out, np.log(np.sqrt(1e-7)), rtol=1e-5)
