import atexit
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--total-timesteps", "128", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "2"]
# four updates of 64 steps, seed 3: the SPO run the robust scripts must repeat bit for bit when their terms vanish
RUN = ["--total-timesteps", "256", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "2", "--seed", "3"]
# the flags of each script's tiny run (tiny_run): what its smoke test checks besides TINY
TINY_FLAGS = {"spo_ppo.py": ["--save-every", "1"], "arpo_ppo.py": ["--eps-warmup", "0.5"], "barpo_ppo.py": ["--eps-warmup", "0.5"],
              "sappo_ppo.py": [], "radial_ppo.py": [], "wocar_ppo.py": ["--save-every", "1"]}


def run_script(script, *args, check=True, timeout=300):
    """Run one of the repo's scripts as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, script), *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


class Launcher:
    """The client of tests/launcher.py: one per test process, started at its first use, ended at exit. A refused run
    costs little but the ~2 s of importing torch, gymnasium and mujoco; the launcher pays them once per worker."""

    def __init__(self):
        self.server, self.env, self.buffer = None, None, b""

    def line(self, deadline):
        """The server's next reply line, or None at the deadline."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.server.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.server.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"tests/launcher.py ended (exit code {self.server.wait()})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def run(self, argv, env, timeout):
        # the server read its environment at its start: another one needs a fresh server (but for the variable pytest
        # sets to the current test's name, which only the child sees)
        startup_env = {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}
        if self.server is not None and startup_env != self.env:
            self.close()
        if self.server is None:
            self.server = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "launcher.py")], cwd=REPO, env=env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.env, self.buffer = startup_env, b""
        with tempfile.TemporaryDirectory() as out:
            paths = {name: os.path.join(out, name) for name in ("stdout", "stderr")}
            request = {"script": argv[0], "args": argv[1:], "cwd": REPO, "env": env, **paths}
            self.server.stdin.write((json.dumps(request) + "\n").encode())
            self.server.stdin.flush()
            deadline = time.monotonic() + timeout + 60  # the first request waits for the server's imports
            pid = self.line(deadline)
            deadline = min(deadline, time.monotonic() + timeout)
            returncode = self.line(deadline)
            if returncode is None:
                os.kill(int(pid), signal.SIGKILL)
                self.line(time.monotonic() + 60)
                raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
            with open(paths["stdout"]) as stdout, open(paths["stderr"]) as stderr:
                return subprocess.CompletedProcess([sys.executable, *argv], int(returncode), stdout.read(), stderr.read())

    def close(self):
        if self.server is not None:
            self.server.stdin.close()  # EOF: the server exits
            self.server.wait()
            self.server = None


LAUNCHER = Launcher()
atexit.register(LAUNCHER.close)


def refused(script, *args, timeout=120):
    """Run a script whose input must be refused before any work, as run_script(check=False) does, but in a forked child
    of tests/launcher.py (see its docstring: the same process, argv, cwd, environment and exit) instead of a fresh
    interpreter; returns the CompletedProcess. Runs that train or evaluate, or whose output is compared with another
    run's, use run_script: a fresh interpreter each, as a user starts them."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return LAUNCHER.run([os.path.join(REPO, script), *map(str, args)], env, timeout)


def assert_one_line_error(proc, *fragments):
    """A bad input must give a non-zero exit and one clear `error:` line on stderr, no traceback."""
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from the TensorBoard event files of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def write_eval(root, env_id, algo, seed, natural, attacks, agent=True):
    """An evaluated run as the sweep exports it: <root>/<env_id>/<algo>/s<seed>/eval.json with these mean returns
    ({attack: mean}) and, unless agent=False, a stub agent.pt; returns the run's directory."""
    import torch

    d = root / env_id / algo / f"s{seed}"
    d.mkdir(parents=True)
    results = {"natural": {"mean": natural}, **{k: {"mean": v} for k, v in attacks.items()}}
    worst = min((v["mean"] for k, v in results.items() if k != "natural"), default=None)  # evaluate.py: None without attacks
    (d / "eval.json").write_text(json.dumps({"epsilon": 0.075, "results": results, "worst_case": worst,
                                             "robustness": None if worst is None else (worst - natural) / natural}))
    if agent:  # aggregate counts a run only if its agent could be evaluated again
        torch.save({"env_id": env_id, "agent": {}, "obs_rms": {}}, d / "agent.pt")
    return d


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process tests use one torch thread, like the scripts: a second thread only contends for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def built_once(tmp_path_factory, name, build):
    """The directory `name`, filled by build(directory) once per test session. Under pytest-xdist the workers share it:
    the first to ask builds it while the others wait on a lock (the pattern of xdist's docs), so a run that many tests
    read is trained once, not once per worker. Tests must not write into it (they copy it first)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above the workers' own
    shared = root / "shared"
    shared.mkdir(exist_ok=True)
    directory = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f"{name}.built").exists():
            shutil.rmtree(directory, ignore_errors=True)  # a build that failed in another worker starts over
            directory.mkdir()
            build(directory)
            (shared / f"{name}.built").touch()
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tiny_run(script) -> (run_dir, stdout): the script's 128-step Hopper-v5 run (TINY plus TINY_FLAGS[script]), trained
    once per session and shared by its smoke test, the diagnostics test and the tests that only need some checkpoint."""

    def get(script):
        def build(directory):
            proc = run_script(script, *TINY, *TINY_FLAGS[script], "--run-dir", directory / "run")
            (directory / "stdout.txt").write_text(proc.stdout)

        directory = built_once(tmp_path_factory, "tiny_" + script[: -len(".py")], build)
        return directory / "run", (directory / "stdout.txt").read_text()

    return get


@pytest.fixture(scope="session")
def tiny_spo_checkpoint(tiny_run):
    """A Hopper-v5 SPO checkpoint from a 128-step run, shared by the tests that only need some checkpoint."""
    return tiny_run("spo_ppo.py")[0] / "agent.pt"


@pytest.fixture(scope="session")
def spo_seed3_run(tmp_path_factory):
    """spo_ppo.py's run with the flags RUN, trained once per session: the reference of every reduction-to-SPO test."""
    return built_once(tmp_path_factory, "spo_seed3", lambda d: run_script("spo_ppo.py", *RUN, "--run-dir", d / "run")) / "run"
