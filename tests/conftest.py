import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--total-timesteps", "128", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "2"]


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


@pytest.fixture(scope="session")
def tiny_spo_checkpoint(tmp_path_factory):
    """A Hopper-v5 SPO checkpoint from a 128-step run, shared by the tests that only need some checkpoint."""
    run_dir = tmp_path_factory.mktemp("spo") / "run"
    run_script("spo_ppo.py", *TINY, "--run-dir", run_dir)
    return run_dir / "agent.pt"
