"""README.md's two set-up-and-go commands are the ones the project runs."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _readme_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    head = text.split("## What you get")[0]
    return _bash_blocks(head)


def test_readme_has_exactly_two_set_up_and_go_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "scripts/explain.py" in main_job and "requirements.txt" in main_job
    assert "pytest" in tests and "requirements-test.txt" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _readme_commands()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert tests in ci.splitlines()
