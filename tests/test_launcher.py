"""The tests' own machinery: conftest.refused() (a forked child of tests/launcher.py) must give what a fresh
interpreter gives, run_script(check=False), or the refusal tests that use it would check something else."""
import json
import textwrap

import pytest

from conftest import refused, run_script

PROBE = """
    import atexit, json, os, sys, threading, time
    preloaded = sorted(m for m in ("attacks", "spo_ppo", "evaluate", "helper") if m in sys.modules)
    import helper  # from the script's own directory
    state = {"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "name": __name__, "helper": helper.WHERE,
             "env": os.environ.get("PYTHONWARNINGS"), "preloaded": preloaded}
    print(json.dumps(state))
    atexit.register(lambda: print("atexit ran", flush=False))
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined", file=sys.stderr))).start()
    print("buffered, not flushed", end="")
"""


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "helper.py").write_text(f"WHERE = {str(tmp_path)!r}\n")
    (tmp_path / "probe.py").write_text(textwrap.dedent(PROBE))
    return tmp_path / "probe.py"


def test_a_script_sees_what_a_fresh_interpreter_shows_it(probe):
    fresh, forked = run_script(probe, "a b", "--x", check=False), refused(probe, "a b", "--x")
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    state = json.loads(fresh.stdout.splitlines()[0])
    assert state["argv"][1:] == ["a b", "--x"] and state["name"] == "__main__" and state["path0"] == str(probe.parent)
    assert state["helper"] == str(probe.parent) and state["env"] == "ignore" and state["preloaded"] == []
    assert fresh.stdout.endswith("buffered, not flushedatexit ran\n") and fresh.stderr == "thread joined\n"


@pytest.mark.parametrize("source, returncode", [("import sys\nsys.exit('error: one line')", 1), ("import sys\nsys.exit(3)", 3),
                                                ("import sys\nsys.exit()", 0), ("raise ValueError('boom')", 1)])
def test_exit_codes_and_error_output_are_the_interpreters(source, returncode, tmp_path):
    (tmp_path / "s.py").write_text(source + "\n")
    fresh, forked = run_script(tmp_path / "s.py", check=False), refused(tmp_path / "s.py")
    assert fresh.returncode == forked.returncode == returncode and fresh.stdout == forked.stdout == ""
    if source.startswith("raise"):  # the traceback's frames differ (the launcher's), its last line does not
        assert forked.stderr.startswith("Traceback") and forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1] == "ValueError: boom"
    else:
        assert forked.stderr == fresh.stderr


@pytest.mark.parametrize("args", [["spo_ppo.py", "--env-id", "NoSuchEnv-v0"], ["spo_ppo.py", "--total-timesteps", "x"],
                                  ["evaluate.py", "nope.pt"], ["learned_attack.py", "paad", "nope.pt", "--epsilon", "-1"]])
def test_a_refusal_of_the_scripts_is_the_same_in_both(args, tmp_path):
    args = [*args, *(["--run-dir", tmp_path / "r"] if args[0] == "spo_ppo.py" else [])]
    fresh, forked = run_script(*args, check=False), refused(*args)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode != 0 and forked.stderr


def test_one_server_serves_the_tests_of_a_worker(tmp_path, monkeypatch):
    """pytest renames PYTEST_CURRENT_TEST for every test: the child sees it, but the server (and its imports) is kept."""
    import conftest

    (tmp_path / "s.py").write_text("import os\nprint(os.environ['PYTEST_CURRENT_TEST'])\n")
    refused(tmp_path / "s.py")
    server = conftest.LAUNCHER.server
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test")
    assert refused(tmp_path / "s.py").stdout == "another test\n" and conftest.LAUNCHER.server is server
