"""The README gives exactly two commands, and CI runs the second one verbatim."""

import re

from ref.catalog import ROOT


def _commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_exactly_two_commands():
    commands = _commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    main, tests = commands
    assert "ref figures --quick" in main
    assert "pytest" in tests and "[test" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert _commands()[1] in lines, ".ci/run must call the README's test command verbatim"
    assert "export NUMBA_NUM_THREADS=2" in ci and "NUMBA_CACHE_DIR" in ci and "HYPOTHESIS_PROFILE=ci" in ci
