"""The `lhp` dispatcher: help lists every subcommand, and nothing imports TensorFlow early."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from lhp_tf.cli import COMMANDS, main


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_is_an_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_module_exists_and_has_main() -> None:
    for name, (module, _) in COMMANDS.items():
        assert importlib.util.find_spec(module) is not None, f"{name}: {module} missing"


def test_import_and_help_do_not_import_tensorflow() -> None:
    code = ("import sys, lhp_tf, lhp_tf.config, lhp_tf.cli; lhp_tf.cli.main(['--help']); "
            "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "lhp_tf.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: lhp" in out.stdout
