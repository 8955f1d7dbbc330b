"""The `ecgbench` dispatcher: every listed command exists and answers --help; typos are refused."""

from __future__ import annotations

import pytest

from pulse_app.cli import SUBCOMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name} " in out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"ecgbench {name}" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reprot"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
