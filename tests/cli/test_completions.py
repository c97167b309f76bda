import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipt_cli.app import app
from lipt_cli.completions import FILE_NAMES, SHELLS, completion_script

from helpers import REPO_ROOT

COMPLETIONS = REPO_ROOT / "completions"


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_scripts_are_up_to_date(shell):
    committed = (COMPLETIONS / FILE_NAMES[shell]).read_text()
    assert committed == completion_script(shell), (
        f"completions/{FILE_NAMES[shell]} is stale: run `python -m lipt_cli.completions`"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_script(shell):
    result = CliRunner().invoke(app, ["completion", shell])
    assert result.exit_code == 0
    assert result.output == completion_script(shell)


def test_every_option_of_the_cli_is_completed():
    script = completion_script("bash")
    for command in ("convert",):
        help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        options = {word for word in help_text.split() if word.startswith("--")}
        assert options, help_text
        for option in options:
            assert option in script, f"{command} {option} is missing from the completion"


def _bash_complete(words: list[str]) -> list[str]:
    line = " ".join(words)
    program = (
        f"source {COMPLETIONS / 'lipt.bash'}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        "_lipt\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_and_choices():
    assert _bash_complete(["lipt", "conv"]) == ["convert"]
    assert _bash_complete(["lipt", "convert", "--ta"]) == ["--task"]
    assert _bash_complete(["lipt", "convert", "--task", "''"]) == ["sr", "denoise", "car"]
    assert "pyproject.toml" in _bash_complete(["lipt", "convert", "pyproj"])


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_parse_the_script(shell, tmp_path):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    path = COMPLETIONS / FILE_NAMES[shell]
    command = [shell, "-n", str(path)] if shell == "zsh" else [shell, "--no-execute", str(path)]
    subprocess.run(command, check=True, env={**os.environ, "HOME": str(tmp_path)})


def test_help_and_completion_do_not_import_torch():
    program = (
        "import sys; from typer.testing import CliRunner; from lipt_cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "r = CliRunner().invoke(app, ['completion', 'bash']); assert r.exit_code == 0; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", program], check=True, cwd=Path(REPO_ROOT))
