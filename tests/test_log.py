"""roadwork.log.setup: the one handler of the library's log records (stderr, level from the environment)."""

import os
import subprocess
import sys

import pytest

from roadwork.log import ENV_LEVEL


def run(code: str, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)
    environment.pop(ENV_LEVEL, None) if ENV_LEVEL not in env else None
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)


LOG_TWICE = (
    "import logging; from roadwork.log import setup; setup(); setup(); log = logging.getLogger('roadwork.x'); "
    "log.debug('quiet'); log.info('said %d', 1); log.warning('careful'); logging.getLogger('other').info('foreign')"
)


def test_records_go_to_stderr_once_at_info_by_default():
    done = run(LOG_TWICE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["INFO roadwork.x: said 1", "WARNING roadwork.x: careful"]


def test_level_and_rank_come_from_the_environment():
    done = run(LOG_TWICE, ROADWORK_LOG_LEVEL="warning", WORLD_SIZE="2", RANK="1")
    assert done.stderr.splitlines() == ["[rank 1] WARNING roadwork.x: careful"]
    done = run(LOG_TWICE, ROADWORK_LOG_LEVEL="debug")
    assert done.stderr.splitlines()[0] == "DEBUG roadwork.x: quiet"


def test_a_bad_level_names_the_variable_and_value():
    done = run(LOG_TWICE, ROADWORK_LOG_LEVEL="chatty")
    assert done.returncode == 1 and "ROADWORK_LOG_LEVEL='CHATTY' is not a logging level" in done.stderr


def test_every_stage_gets_the_handler():
    done = run("import logging, roadwork.stages.common; logging.getLogger('roadwork.stages.x').warning('from a stage')")
    assert done.stderr.splitlines() == ["WARNING roadwork.stages.x: from a stage"]


@pytest.mark.parametrize("argv", [["--help"], ["nope"]])
def test_cli_sets_it_up_and_keeps_its_output(argv):
    done = run(
        f"import logging; from roadwork.cli import main; code = main({argv!r}); "
        "logging.getLogger('roadwork.y').info('after'); raise SystemExit(code)"
    )
    assert done.returncode == (0 if argv == ["--help"] else 2)
    assert ("usage: roadwork COMMAND" in done.stdout) == (argv == ["--help"])  # the CLI's own output: stdout
    assert ("unknown command 'nope'" in done.stderr) == (argv == ["nope"])
    assert done.stderr.splitlines()[-1] == "INFO roadwork.y: after"
