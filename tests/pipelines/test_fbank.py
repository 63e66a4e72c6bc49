"""pipelines.fbank: AST's Kaldi fbank, matched against torchaudio's on a real clip's audio; the stored
rows keep the timeline (round(100 d) of them), Kaldi's frames unchanged at their head."""

from pathlib import Path

import numpy as np
import pytest

from pipelines.fbank import fbank, kaldi_fbank, kaldi_num_frames, mel_banks, pad_or_cut
from pipelines.logmel import num_rows
from shards.format.schema import FbankParams
from shards.input.config import AST_MEL_MEAN, AST_MEL_STD

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "ast" / "features"
P = FbankParams()


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "waveform_16k_mono_f32.npy"), dict(np.load(GOLDEN / "features.npz"))


def test_matches_torchaudios_kaldi_fbank_on_a_real_clip(golden):
    wave, expected = golden
    ours = kaldi_fbank(wave)
    assert ours.dtype == np.float32 and ours.shape == expected["fbank_kaldi_torchaudio_raw"].shape == (393, 128)
    np.testing.assert_allclose(ours, expected["fbank_kaldi_torchaudio_raw"], atol=1e-3, rtol=0)


def test_asts_model_input_is_the_fbank_padded_to_1024_and_normalised(golden):
    wave, expected = golden
    ast = (pad_or_cut(kaldi_fbank(wave), 1024) - AST_MEL_MEAN) / AST_MEL_STD
    assert ast.shape == (1024, 128)
    np.testing.assert_allclose(ast, expected["ast_input_1024"], atol=1e-3, rtol=0)
    # Hugging Face's ASTFeatureExtractor skips the mean subtraction, which each frame's own DC removal undoes
    hf = (pad_or_cut(kaldi_fbank(wave, FbankParams(subtract_mean=False)), 1024) - AST_MEL_MEAN) / AST_MEL_STD
    np.testing.assert_allclose(hf, expected["hf_ast_feature_extractor"], atol=1e-3, rtol=0)
    assert pad_or_cut(np.ones((5, 2)), 3).shape == (3, 2)


def test_stored_rows_follow_the_timeline_with_kaldis_frames_first(golden):
    wave, _ = golden
    raw, stored = kaldi_fbank(wave), fbank(wave)
    assert len(wave) == 63120 and stored.shape == (num_rows(len(wave)), 128) == (395, 128)
    np.testing.assert_array_equal(stored[:len(raw)], raw)
    assert np.isfinite(stored).all()
    for n in [0, 1, 79, 80, 399, 400, 559, 560, 16000, 16080]:
        audio = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        assert fbank(audio).shape == (int(n / 160 + 0.5), 128)  # round(n / 160), halves up
        assert kaldi_fbank(audio).shape == (kaldi_num_frames(n), 128) == (max(0, 1 + (n - 400) // 160), 128)


def test_silence_is_the_log_floor_and_a_tone_lands_in_its_bin():
    assert (fbank(np.zeros(1600, np.float32)) == np.float32(np.log(P.log_floor))).all()
    t = np.arange(16000) / 16000
    spec = kaldi_fbank((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    centres = 700 * (np.exp(np.linspace(1127 * np.log(1 + 20 / 700), 1127 * np.log(1 + 8000 / 700), 130)[1:-1]
                            / 1127) - 1)
    assert abs(centres[int(np.argmax(spec.mean(0)))] - 1000) < 40


def test_kaldi_mel_banks():
    banks = mel_banks(P)
    assert banks.shape == (128, 257) and (banks[:, -1] == 0).all() and banks.max() <= 1
    assert (banks[:, :1] == 0).all()  # 0 Hz lies below the 20 Hz floor
    with pytest.raises(ValueError, match="dither"):
        fbank(np.zeros(800, np.float32), FbankParams(dither=1.0))
