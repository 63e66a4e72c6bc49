"""pipelines.media_input: how an input is named on ffmpeg's command line."""

from pathlib import Path

from pipelines import media_input


def test_input_arg_cannot_become_an_option_or_protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert media_input.input_arg("-evil.mp4") == "file:" + str(tmp_path / "-evil.mp4")
    assert media_input.input_arg("concat:a.mp4") == "file:" + str(tmp_path / "concat:a.mp4")
    assert media_input.input_arg(Path("x.mp4")) == "file:" + str(tmp_path / "x.mp4")
    assert media_input.input_arg("https://example.com/v.mp4") == "https://example.com/v.mp4"
