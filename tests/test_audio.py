"""The in-graph spectrogram front ends against librosa (the oracle), and their edge cases.

Frame alignment: Keras' STFTSpectrogram frames a 480-sample window at k * 240 and zero-pads it to
512 at the END; librosa (center=False, n_fft=512, win_length=480) centres the 480-sample window
inside each 512-sample frame, i.e. 16 zeros on each side. Padding the signal by 16 samples at both
ends before librosa makes librosa's frame k cover exactly samples [240k, 240k + 480) like Keras';
the magnitudes then agree bin for bin (zero-padding position only changes the phase).

The "mel" front end (Keras' MelSpectrogram; the `tiny` preset): frames centred with reflect padding, Hann window of
win_length zero-padded to n_fft, power spectrum, HTK-scale triangular filters without area
normalisation from 0 Hz to Nyquist, 10 * log10(max(power, 1e-10)): librosa's melspectrogram with
center=True, pad_mode="reflect", htk=True, norm=None, then power_to_db with amin=1e-10, top_db=None.
"""
import keras
import librosa
import numpy as np
import pytest

from l3_keras.audio import apply_frontend, spectrogram_shape
from l3_keras.config import PRESETS, get_preset

PAPER = get_preset("paper")
TOLERANCE = 1.1e-4  # max |log-magnitude difference| over bins within 60 dB of the maximum (README)
MEL_TOLERANCE_DB = 0.1  # max |dB difference| over mel bins within 60 dB of the maximum


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


def librosa_log_mel(y, cfg):
    power = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, window="hann", center=True, pad_mode="reflect", power=2.0,
        n_mels=cfg.n_mels, fmin=0.0, fmax=cfg.sample_rate / 2, htk=True, norm=None)
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p].frontend == "mel"])
def test_mel_front_ends_match_librosa(preset):
    # The main job's `tiny`. (OpenL3's dB front ends are checked against OpenL3's own outputs in
    # tests/test_openl3.py.)
    cfg = get_preset(preset)
    waveform = keras.Input((cfg.audio_samples,))
    model = keras.Model(waveform, apply_frontend(waveform, cfg))
    sr = cfg.sample_rate
    y = 0.5 * librosa.chirp(fmin=100, fmax=0.45 * sr, sr=sr, duration=1.0)[: cfg.audio_samples]
    y += 0.01 * np.random.default_rng(0).standard_normal(y.size)
    ours = model.predict(y[None].astype(np.float32), verbose=0)[0, :, :, 0]
    ref = librosa_log_mel(y, cfg)
    assert ours.shape == ref.shape == spectrogram_shape(cfg)
    within_60db = ref >= ref.max() - 60
    diff = np.abs(ours - ref)[within_60db]
    assert within_60db.mean() > 0.3
    assert diff.max() <= MEL_TOLERANCE_DB, f"{preset}: max |diff| {diff.max():.3f} dB"


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
