"""benchmark.py: the sweep skips finished runs, resumes killed ones, emits SLURM, and tells what is done (status).
The aggregation of the finished runs is report.py's, tested in test_report.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, refused, run_script, write_eval

TINY_SWEEP = ["--algos", "spo", "--envs", "Hopper-v5", "--seeds", "1", "--preset", "none", "--total-timesteps", "1280",
              "--extra=--num-steps 64 --num-minibatches 4 --update-epochs 1", "--attacks", "random",
              "--eval-episodes", "2", "--save-every", "1", "--workers", "1"]


def test_sweep_resumes_a_killed_run_then_skips_it(tmp_path):
    root = tmp_path / "sweep"
    run_dir = root / "Hopper-v5" / "spo" / "s1"
    # start the run exactly as the sweep would, and kill it once it has written a checkpoint
    train = [sys.executable, os.path.join(REPO, "spo_ppo.py"), "--env-id", "Hopper-v5", "--seed", "1", "--total-timesteps",
             "1280", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "1", "--run-dir", str(run_dir),
             "--save-every", "1", "--resume"]
    proc = subprocess.Popen(train, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "agent.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    killed_at = torch.load(run_dir / "agent.pt", weights_only=True)["global_step"]
    assert 0 < killed_at < 1280

    results = tmp_path / "results"
    out = run_script("benchmark.py", "run", "--root", root, "--results", results, *TINY_SWEEP)
    assert "0 already complete, 1 to do" in out.stdout and "ok" in out.stdout
    assert "resuming" in (run_dir / "train.log").read_text()
    assert torch.load(run_dir / "agent.pt", weights_only=True)["global_step"] == 1280
    # the finished run is exported for committing: agent without optimiser, the code's commit, curve, evaluation
    exported = results / "none" / "Hopper-v5" / "spo" / "s1"
    agent = torch.load(exported / "agent.pt", weights_only=True)
    assert "optimizer" not in agent and agent["global_step"] == 1280
    assert len(agent["commits"]) == 1 and re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", agent["commits"][0])
    curve = (exported / "curve.csv").read_text().splitlines()
    assert curve[0] == "step,episodic_return" and len(curve) > 5 and all(0 < int(l.split(",")[0]) <= 1280 for l in curve[1:])
    # the collapse scalars, one row per iteration (20 of 64 steps), spo logging no epsilon; a resume keeps one row each
    diagnostics = (exported / "diagnostics.csv").read_text().splitlines()
    assert diagnostics[0] == "step,action_spread,input_sensitivity"
    assert [int(l.split(",")[0]) for l in diagnostics[1:]] == list(range(64, 1281, 64))
    assert all(float(x) > 0 for l in diagnostics[1:] for x in l.split(",")[1:])
    assert json.loads((exported / "eval.json").read_text())["num_episodes"] == 2
    assert not (run_dir / "eval.json").exists()

    before = (exported / "eval.json").stat().st_mtime
    out = run_script("benchmark.py", "run", "--root", root, "--results", results, *TINY_SWEEP)
    assert "1 already complete, 0 to do" in out.stdout
    assert (exported / "eval.json").stat().st_mtime == before


@pytest.mark.parametrize("emit", [["--emit", "slurm"], ["--emit=slurm"]])
def test_emit_slurm_writes_a_valid_array_script(emit, tmp_path):
    root = tmp_path / "sweep"
    run_script("benchmark.py", "run", "--root", root, "--algos", "spo", "barpo_k1", "--envs", "Hopper-v5", "Walker2d-v5",
               "--seeds", "1", "2", "3", "--extra=--inner-steps 5", "--results=my_results", *emit)
    script = (root / "sweep.slurm").read_text()
    assert "#SBATCH --array=0-11" in script  # 2 algos x 2 envs x 3 seeds
    assert "--only-index $SLURM_ARRAY_TASK_ID" in script and "--emit" not in script
    task = [l for l in script.splitlines() if "--only-index" in l][0]
    # the tasks run in the repo: the sweep's directories are pinned as absolute paths, each once
    assert task.count("--root") == 1 and f"--root {root}" in task
    assert task.count("--results") == 1 and f"--results {os.path.join(REPO, 'my_results')}" in task
    assert subprocess.run(["bash", "-n", str(root / "sweep.slurm")]).returncode == 0
    # what an array task would run parses, keeps --extra as one argument, and is the same sweep
    task_cmd = [l for l in script.splitlines() if "--only-index" in l][0].replace("$SLURM_ARRAY_TASK_ID", "11").replace("${PYTHON:-python}", sys.executable)
    dry = subprocess.run(["bash", "-c", task_cmd.replace("--only-index 11", "--only-index 11 --dry-run")],
                         capture_output=True, text=True, cwd=REPO)
    assert dry.returncode == 0, dry.stderr
    assert "Walker2d-v5/barpo_k1/s3" in dry.stdout and "--inner-steps 5" in dry.stdout
    assert not (root / "Hopper-v5").exists()  # emitting runs nothing
    # task 11 is the last job: Walker2d, barpo_k1, seed 3
    dry = run_script("benchmark.py", "run", "--root", root, "--algos", "spo", "barpo_k1", "--envs", "Hopper-v5", "Walker2d-v5",
                     "--seeds", "1", "2", "3", "--only-index", "11", "--results", tmp_path / "results", "--dry-run")
    assert "barpo_ppo.py" in dry.stdout and "Walker2d-v5/barpo_k1/s3" in dry.stdout and "--learning-rate 4e-4" in dry.stdout


def test_unknown_algorithm_is_one_line_error(tmp_path):
    from conftest import assert_one_line_error

    assert_one_line_error(refused("benchmark.py", "run", "--algos", "ppg", "--root", tmp_path), "ppg")


def test_status_shows_done_and_left(tmp_path):
    results = tmp_path / "results"
    write_eval(results / "none", "Hopper-v5", "spo", 1, 1000, {"random": 900})
    write_eval(results / "none", "Hopper-v5", "spo", 2, 1000, {"random": 900, "critic": 800, "mad": 700, "rs": 600, "sarl": 100, "paad": 200})
    out = run_script("benchmark.py", "status", "--algos", "spo", "arpo", "--seeds", "1", "2", "--preset", "none",
                     "--root", tmp_path / "sweep", "--results", results).stdout
    assert re.search(r"Hopper-v5/spo\s+eval\s+done", out) and re.search(r"Hopper-v5/arpo\s+-\s+-", out)
    assert "1 of 4 done; left: 3 runs" in out
    kappa = run_script("benchmark.py", "status", "--algos", "kappa", "spo", "--seeds", "1", "--preset", "none",
                       "--root", tmp_path / "sweep", "--results", results).stdout
    rows = [l.split()[0] for l in kappa.splitlines() if l.startswith("Hopper-v5/")]
    assert rows == [f"Hopper-v5/{a}" for a in ("barpo_k0", "barpo_k0.25", "barpo_k0.5", "barpo_k1", "barpo_k2", "spo")]


def test_status_tells_a_run_of_another_budget(tmp_path):
    sweep = tmp_path / "sweep" / "Hopper-v5" / "spo" / "s1"
    sweep.mkdir(parents=True)
    torch.save({"iteration": 5, "args": {"num_iterations": 10, "total_timesteps": 20480}}, sweep / "agent.pt")
    common = ["--algos", "spo", "--seeds", "1", "--root", tmp_path / "sweep", "--results", tmp_path / "results", "--preset", "none"]
    assert re.search(r"Hopper-v5/spo\s+50%", run_script("benchmark.py", "status", *common, "--total-timesteps", "20480").stdout)
    assert re.search(r"Hopper-v5/spo\s+other", run_script("benchmark.py", "status", *common).stdout)


def test_a_run_evaluated_with_fewer_attacks_than_asked_is_not_complete(tmp_path):
    """--attacks all asks for every attack of evaluate.py: an eval.json with only some of them is redone, not skipped
    (once, a natural-only evaluation counted as complete under --attacks all --no-learned)."""
    import benchmark
    import evaluate

    assert benchmark.GRADIENT_ATTACKS + ["sarl", "paad"] == evaluate.ATTACKS
    args = benchmark.Run(algos=["spo"], envs=["Hopper-v5"], seeds=[1], results=str(tmp_path), root=str(tmp_path / "runs"))
    (job,) = benchmark.jobs_of(args)
    no_learned = benchmark.Run(**{**vars(args), "learned": False})
    cases = [({}, False, False), ({"sarl": 1.0, "paad": 1.0}, False, False),
             ({"random": 1.0, "critic": 1.0, "mad": 1.0, "rs": 1.0}, False, True),
             ({a: 1.0 for a in evaluate.ATTACKS}, True, True)]
    for attacks, complete, complete_without_learned in cases:
        shutil.rmtree(tmp_path / "quick", ignore_errors=True)
        write_eval(tmp_path / "quick", "Hopper-v5", "spo", 1, 1000.0, attacks)
        assert benchmark.is_complete(job, args) is complete, attacks
        assert benchmark.is_complete(job, no_learned) is complete_without_learned, attacks
    write_eval(tmp_path / "other" / "quick", "Hopper-v5", "spo", 1, 1000.0, {"random": 1.0})
    subset = benchmark.Run(**{**vars(args), "attacks": "random,mad", "results": str(tmp_path / "other")})
    (job,) = benchmark.jobs_of(subset)
    assert benchmark.is_complete(job, subset) is False  # a named subset: each attack in it
    assert benchmark.is_complete(job, benchmark.Run(**{**vars(subset), "attacks": "random"})) is True


def test_calibrated_preset_is_paper_on_the_authors_ppo(tmp_path):
    """On HalfCheetah the calibrated preset runs what the calibration's *_authors runs ran (so they can stand for it);
    elsewhere it keeps the authors' annealed learning rate; results go under results/calibrated/."""
    from benchmark import AUTHORS_PPO, Run, expand_algos, jobs_of

    def train_flags(preset, algo, env_id):
        args = expand_algos(Run(algos=[algo], envs=[env_id], seeds=[1], preset=preset, root=str(tmp_path),
                                results=str(tmp_path / "results")))
        job, = jobs_of(args)
        return job, job["train"][2:job["train"].index("--run-dir")]

    def parsed(flags):  # the flags as the script would read them: the last value of each wins
        out, i = {}, 0
        while i < len(flags):
            takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
            out[flags[i]] = flags[i + 1] if takes_value else True
            i += 2 if takes_value else 1
        return out

    cheetah, flags = train_flags("calibrated", "barpo_k1", "HalfCheetah-v5")
    _, authors = train_flags("paper", "barpo_k1_authors", "HalfCheetah-v5")
    assert parsed(flags) == parsed(authors) and "--rs-grid" in cheetah["evaluate"]
    assert cheetah["out_dir"] == str(tmp_path / "results" / "calibrated" / "HalfCheetah-v5" / "barpo_k1" / "s1")
    paper_job, _ = train_flags("paper", "barpo_k1", "HalfCheetah-v5")  # same budget: it must not resume paper's run
    assert cheetah["run_dir"] == str(tmp_path / "calibrated" / "HalfCheetah-v5" / "barpo_k1" / "s1") != paper_job["run_dir"]
    _, hopper = train_flags("calibrated", "sappo", "Hopper-v5")
    assert parsed(hopper)["--value-first"] and parsed(hopper)["--max-grad-norm"] == "0"
    assert "--no-anneal-lr" not in hopper and parsed(hopper)["--total-timesteps"] == "2000000"
    _, wocar = train_flags("calibrated", "wocar", "HalfCheetah-v5")  # WocaR's own HalfCheetah config anneals
    assert parsed(wocar)["--value-first"] and "--no-anneal-lr" not in wocar
    _, paper = train_flags("paper", "barpo_k1", "HalfCheetah-v5")
    assert not {f for f in AUTHORS_PPO if f.startswith("--")} & set(paper)  # the paper preset stays CleanRL's PPO
