"""The tools under hostile input, driven through their real command lines on tiny inputs: nothing committed is replaced
or lost, nothing is pooled by mistake, nonsense is refused before any work, and every refusal is one `error:` line.

Every test here also checks that nothing under results/ (or the test fixtures) changed, whatever it ran."""
import json
import os
import shutil
import subprocess

import pytest
import torch

from conftest import REPO, RUN, TINY, assert_one_line_error, read_scalars, refused, run_script

COMMITTED = os.path.join(REPO, "results", "quick", "Hopper-v5", "spo", "s1")  # an exported agent with its adversaries
FIXTURE = os.path.join(REPO, "tests", "fixtures", "results", "quick", "Hopper-v5", "spo", "s1")  # a 128-step agent, same layout
TINY_ADV = [*TINY, "--num-envs", "2"]
ROBUST = ["arpo_ppo.py", "barpo_ppo.py", "sappo_ppo.py", "radial_ppo.py", "wocar_ppo.py"]


def tree(root):
    """{path: (size, mtime)} of every file under root, ignored ones included."""
    return {os.path.relpath(os.path.join(d, f), root): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(autouse=True)
def committed_files_unchanged():
    watched = [os.path.join(REPO, "results"), os.path.join(REPO, "tests", "fixtures")]
    status = lambda: subprocess.run(["git", "status", "--porcelain", "--ignored", "--", *watched], cwd=REPO,
                                    capture_output=True, text=True).stdout
    before = [tree(w) for w in watched], status()
    yield
    assert [tree(w) for w in watched] == before[0] and status() == before[1], "a test changed committed results"


def victim_copy(directory, with_adversaries=False):
    """A private copy of the fixture agent (and its adversaries): what a test may write next to."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(FIXTURE):
        if name == "agent.pt" or (with_adversaries and name.endswith("_eps0.075.pt")):
            shutil.copy(os.path.join(FIXTURE, name), directory / name)
    return directory / "agent.pt"


def doctored(tmp_path, name, change):
    """A copy of the fixture agent with change(checkpoint) applied."""
    ckpt = torch.load(os.path.join(FIXTURE, "agent.pt"), weights_only=True)
    ckpt = change(ckpt)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


# 1. A committed adversary is never replaced silently


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_learned_attack_refuses_to_replace_a_committed_adversary(name, tmp_path):
    adversary = os.path.join(COMMITTED, f"{name}_eps0.075.pt")
    assert os.path.isfile(adversary)
    proc = refused("learned_attack.py", name, os.path.join(COMMITTED, "agent.pt"), *TINY_ADV, "--run-dir", tmp_path / "tb")
    assert_one_line_error(proc, f"{name}_eps0.075.pt", "--overwrite", "--output")
    assert not (tmp_path / "tb").exists()  # refused before any training


def test_train_learned_never_replaces_an_adversary_it_cannot_use(tmp_path):
    victim = victim_copy(tmp_path / "v", with_adversaries=True)
    ckpt = torch.load(victim, weights_only=True)
    ckpt["global_step"] += 1  # another version of the victim: its adversaries are stale
    torch.save(ckpt, victim)
    stale = (victim.parent / "sarl_eps0.075.pt").read_bytes()
    proc = refused("evaluate.py", victim, "--attacks", "sarl", "--train-learned", "--num-episodes", "2",
                   "--learned-args=" + " ".join(TINY_ADV), "--output", tmp_path / "e.json")
    assert_one_line_error(proc, "sarl_eps0.075.pt", "sha1")
    assert (victim.parent / "sarl_eps0.075.pt").read_bytes() == stale and not (tmp_path / "e.json").exists()


# 2. curve.csv holds the episodes of the run that was kept


def test_every_committed_curve_goes_forward():
    import glob

    curves = sorted(glob.glob(os.path.join(REPO, "results", "**", "curve.csv"), recursive=True))
    assert len(curves) >= 81
    for path in curves:
        steps = [int(line.split(",")[0]) for line in open(path).read().splitlines()[1:]]
        assert steps and all(a <= b for a, b in zip(steps, steps[1:])), path


def fake_run_dir(run_dir, starts, batch=64):
    """A finished training run whose TensorBoard logs hold several starts, each logged without a restart marker
    (as the training scripts did before they wrote one): starts = [[episode step, ...] per start]."""
    from torch.utils.tensorboard import SummaryWriter

    for steps in starts:  # one event file per start, in the order of their names (time stamp, then a counter)
        writer = SummaryWriter(str(run_dir))
        for step in steps:
            writer.add_scalar("charts/episodic_return", float(step), step)
        writer.close()
    torch.save({"algo": "spo", "iteration": 4, "global_step": 4 * batch, "optimizer": {},
                "args": {"num_iterations": 4, "num_steps": batch, "num_envs": 1}}, run_dir / "agent.pt")
    (run_dir / "commits.txt").write_text("0" * 40 + "\n")


def test_export_drops_the_episodes_of_a_start_that_a_resume_threw_away(tmp_path):
    import benchmark

    # the first start ran to step 200 and checkpointed at 128 (iteration 2 of 64 steps); the resume restarted from there
    fake_run_dir(tmp_path / "run", [[10, 70, 120, 150, 190], [140, 200, 250]])
    benchmark.export_run(str(tmp_path / "run"), str(tmp_path / "out"))
    rows = (tmp_path / "out" / "curve.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [10, 70, 120, 140, 200, 250]


def test_resume_marks_its_restart_so_the_logs_hold_only_the_kept_run(spo_seed3_run, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(spo_seed3_run, run_dir)  # a finished run of RUN: 4 updates of 64 steps
    first = [s for s, _ in read_scalars(str(run_dir))["charts/episodic_return"]]
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    ckpt["iteration"], ckpt["global_step"] = 2, 128  # as if the last checkpoint had been written at step 128
    torch.save(ckpt, run_dir / "agent.pt")
    assert "resuming" in run_script("spo_ppo.py", *RUN, "--run-dir", run_dir, "--resume").stdout
    steps = [s for s, _ in read_scalars(str(run_dir))["charts/episodic_return"]]
    assert max(first) > 128 and steps == sorted(steps)
    assert [s for s in steps if s <= 128] == [s for s in first if s <= 128]


def test_a_start_without_resume_never_mixes_its_logs_with_an_earlier_start(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "r"
    writer = SummaryWriter(str(run_dir))  # an earlier start that was killed before its first checkpoint
    for step in range(10, 1000, 10):
        writer.add_scalar("charts/episodic_return", 1e6, step)
    writer.close()
    logs = sorted(os.listdir(run_dir))
    proc = refused("spo_ppo.py", *TINY, "--run-dir", run_dir)
    assert_one_line_error(proc, str(run_dir), "--resume")
    assert sorted(os.listdir(run_dir)) == logs
    proc = run_script("spo_ppo.py", *TINY, "--run-dir", run_dir, "--resume")  # starts over and says so
    assert "starting over" in proc.stdout
    assert all(v < 1e6 for _, v in read_scalars(str(run_dir))["charts/episodic_return"])


# 3. Outputs are checked before the work; temporary files have unique names


@pytest.mark.parametrize("bad", ["missing", "directory"])
def test_evaluate_checks_its_output_path_before_the_work(bad, tmp_path):
    out = tmp_path / "no" / "such" / "e.json" if bad == "missing" else tmp_path
    proc = refused("evaluate.py", os.path.join(COMMITTED, "agent.pt"), "--num-episodes", "2", "--output", out)
    assert_one_line_error(proc, str(out))
    assert "natural" not in proc.stdout


@pytest.mark.parametrize("name, bad", [("sarl", "missing"), ("paad", "directory")])
def test_learned_attack_checks_its_output_path_before_training(name, bad, tmp_path):
    victim = victim_copy(tmp_path / "v")
    out = tmp_path / "no" / "adv.pt" if bad == "missing" else tmp_path
    proc = refused("learned_attack.py", name, victim, *TINY_ADV, "--output", out, "--run-dir", tmp_path / "tb")
    assert_one_line_error(proc, str(out))
    assert not (tmp_path / "tb").exists()


def test_temporary_files_are_not_shared_between_writers(tmp_path):
    victim = victim_copy(tmp_path / "v")
    out = tmp_path / "e.json"
    (tmp_path / "e.json.tmp").mkdir()  # another writer's temporary name: must not be ours
    run_script("evaluate.py", victim, "--num-episodes", "2", "--output", out)
    assert json.loads(out.read_text())["num_episodes"] == 2
    adversary = victim.parent / "sarl_eps0.075.pt"
    (victim.parent / "sarl_eps0.075.pt.tmp").mkdir()
    run_script("learned_attack.py", "sarl", victim, *TINY_ADV, "--run-dir", tmp_path / "tb")
    assert torch.load(adversary, weights_only=True)["attack"] == "sarl"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["agent.pt", "sarl_eps0.075.pt", "sarl_eps0.075.pt.tmp"]


# 4. aggregate pools one protocol per task, and says which


def write_eval(root, algo, seed, natural, **protocol):
    d = root / "Hopper-v5" / algo / f"s{seed}"
    d.mkdir(parents=True)
    report = {"epsilon": 0.075, "num_episodes": 20, "deterministic": True, "attack_steps": 10, "mad_betas": [1.0, 1e-05],
              "results": {"natural": {"mean": natural}, "mad": {"mean": natural / 2}}, "worst_case": natural / 2}
    report.update(protocol)
    report = {k: v for k, v in report.items() if v is not None}
    (d / "eval.json").write_text(json.dumps(report))
    torch.save({"env_id": "Hopper-v5", "agent": {}, "obs_rms": {}}, d / "agent.pt")
    return d


def test_aggregate_pools_only_runs_of_one_protocol_and_names_the_others(tmp_path):
    root = tmp_path / "sweep"
    for seed in (1, 2, 3):
        write_eval(root, "spo", seed, 1000 * seed)
    huge = write_eval(root, "spo", 4, 1e6, epsilon=1e9)
    short = write_eval(root, "spo", 5, 1e6, num_episodes=5)
    unmarked = write_eval(root, "spo", 6, 1e6, epsilon=None)  # an eval.json without its ε
    out = tmp_path / "r.md"
    proc = run_script("report.py", "aggregate", "--root", root, "--output", out, "--figures", tmp_path / "fig",
                      "--bootstrap-reps", "100")
    text = out.read_text()
    assert "### Hopper-v5 (ε = 0.075)" in text and "1000000000" not in text
    assert "| spo | 3 | 2000 [" in text  # seeds 1-3 only
    assert "20 deterministic episodes" in text and "50 deterministic episodes" not in text
    for d, why in ((huge, "ε = 1e+09"), (short, "5 deterministic episodes"), (unmarked, "epsilon")):
        assert any(line.startswith(f"left out {d}") and why in line for line in proc.stderr.splitlines()), (d, proc.stderr)


# 5. Nonsense is refused before any work


@pytest.mark.parametrize("eps", ["inf", "1e9"])
def test_evaluate_refuses_an_epsilon_outside_the_observation_clip(eps, tmp_path):
    proc = refused("evaluate.py", os.path.join(COMMITTED, "agent.pt"), "--epsilon", eps, "--attacks", "random",
                   "--num-episodes", "2", "--output", tmp_path / "e.json")
    assert_one_line_error(proc, "--epsilon")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_learned_attack_refuses_an_epsilon_outside_the_observation_clip(name, tmp_path):
    victim = victim_copy(tmp_path / "v")
    proc = refused("learned_attack.py", name, victim, "--epsilon", "1e9", *TINY_ADV, "--run-dir", tmp_path / "tb")
    assert_one_line_error(proc, "--epsilon")
    assert sorted(os.listdir(victim.parent)) == ["agent.pt"] and not (tmp_path / "tb").exists()


@pytest.mark.parametrize("script", ["spo_ppo.py", "wocar_ppo.py"])  # the check is shared code: the alignment test keeps it in all six
def test_training_scripts_refuse_a_negative_learning_rate(script, tmp_path):
    proc = refused(script, *TINY, "--learning-rate", "-1", "--run-dir", tmp_path / "r")
    assert_one_line_error(proc, "--learning-rate")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags", [["--gamma", "5"], ["--value-learning-rate", "-1"], ["--ent-coef", "-0.01"],
                                   ["--vf-coef", "nan"], ["--clip-coef", "0"]])
def test_training_refuses_nonsense_hyperparameters(flags, tmp_path):
    proc = refused("spo_ppo.py", *TINY, *flags, "--run-dir", tmp_path / "r")
    assert_one_line_error(proc, flags[0])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script, eps", zip(ROBUST, ["1e9", "inf", "1e9", "inf", "1e9"]))
def test_robust_training_refuses_an_epsilon_outside_the_observation_clip(script, eps, tmp_path):
    proc = refused(script, *TINY, "--epsilon", eps, "--run-dir", tmp_path / "r")
    assert_one_line_error(proc, "--epsilon")
    assert not (tmp_path / "r").exists()


def eps_curve_root(tmp_path, seeds=(1,)):
    root = tmp_path / "root"
    for seed in seeds:
        d = root / "Hopper-v5" / "spo" / f"s{seed}"
        d.mkdir(parents=True)
        shutil.copy(os.path.join(FIXTURE, "agent.pt"), d / "agent.pt")
        (d / "eval.json").write_text(json.dumps({"epsilon": 0.075, "num_episodes": 2, "results": {
            "natural": {"mean": 100.0 * seed}, "random": {"mean": 90.0 * seed}, "mad": {"mean": 80.0 * seed}}}))
    return root


@pytest.mark.parametrize("multiples", [["nan"], ["0", "1e9"]])
def test_eps_curve_refuses_multiples_that_are_not_a_radius(multiples, tmp_path):
    root = eps_curve_root(tmp_path)
    proc = refused("eps_curve.py", "--root", root, "--multiples", *multiples, "--paad-multiples", "--num-episodes", "2",
                   "--evaluate-args=--rs-steps 400 --rs-epochs 1", "--output", tmp_path / "r.md", "--figures", tmp_path / "fig")
    assert_one_line_error(proc, "--multiples")
    assert sorted(os.listdir(root / "Hopper-v5" / "spo" / "s1")) == ["agent.pt", "eval.json"]


@pytest.mark.parametrize("flags, fragment", [
    (["--eval-episodes", "0"], "--eval-episodes"),
    (["--envs", "Foo-v9"], "Foo-v9"),
    (["--seeds"], "--seeds"),
    (["--workers", "0"], "--workers"),
    (["--attacks", "random,bogus"], "bogus"),
])
def test_benchmark_run_refuses_nonsense_in_a_dry_run(flags, fragment, tmp_path):
    proc = refused("benchmark.py", "run", "--preset", "none", "--algos", "spo", "--root", tmp_path / "sweep",
                   "--results", tmp_path / "results", "--dry-run", *flags)
    assert_one_line_error(proc, fragment)


# 6. One error line (or, in the sweep tools, a named skip) instead of a traceback


def test_resume_of_a_file_that_is_not_a_training_checkpoint_is_one_line(tmp_path):
    whole = open(os.path.join(FIXTURE, "agent.pt"), "rb").read()
    for content, fragment in ((whole[: len(whole) // 2], "not a readable checkpoint"),  # truncated
                              (None, "not a checkpoint"),  # a list
                              (whole, "optimizer")):  # an exported agent: no optimiser state to resume
        run_dir = tmp_path / f"r{len(os.listdir(tmp_path))}"
        run_dir.mkdir()
        if content is None:
            torch.save([1, 2, 3], run_dir / "agent.pt")
        else:
            (run_dir / "agent.pt").write_bytes(content)
        before = (run_dir / "agent.pt").read_bytes()
        proc = refused("spo_ppo.py", *TINY, "--run-dir", run_dir, "--resume")
        assert_one_line_error(proc, fragment)
        assert os.listdir(run_dir) == ["agent.pt"] and (run_dir / "agent.pt").read_bytes() == before


def test_truncated_robust_sarsa_cache_is_one_line_before_the_episodes(tmp_path):
    victim = victim_copy(tmp_path / "v")
    cache = victim.parent / "rs_q_eps0.02_reg0.1_steps400_ep1.pt"
    cache.write_bytes(b"PK\x03\x04 truncated")
    proc = refused("evaluate.py", victim, "--attacks", "rs", "--rs-steps", "400", "--rs-epochs", "1", "--num-episodes", "2",
                   "--output", tmp_path / "e.json")
    assert_one_line_error(proc, cache.name)
    assert "natural" not in proc.stdout and cache.read_bytes() == b"PK\x03\x04 truncated"


@pytest.mark.parametrize("flags, fragment", [(["--mad-betas", "1,nan"], "--mad-betas"), (["--threads", "0"], "--threads")])
def test_evaluate_refuses_bad_flags_before_the_episodes(flags, fragment, tmp_path):
    proc = refused("evaluate.py", os.path.join(COMMITTED, "agent.pt"), "--attacks", "mad", "--num-episodes", "2", *flags,
                   "--output", tmp_path / "e.json")
    assert_one_line_error(proc, fragment)
    assert "natural" not in proc.stdout


@pytest.mark.parametrize("name, flags", [("sarl", ["--threads", "0"]), ("paad", ["--gamma", "5"])])
def test_learned_attack_refuses_zero_threads_and_a_discount_above_one(name, flags, tmp_path):
    victim = victim_copy(tmp_path / "v")
    proc = refused("learned_attack.py", name, victim, *TINY_ADV, *flags, "--run-dir", tmp_path / "tb")
    assert_one_line_error(proc, flags[0])
    assert sorted(os.listdir(victim.parent)) == ["agent.pt"] and not (tmp_path / "tb").exists()


@pytest.mark.parametrize("case", ["not a dict", "another hidden size", "obs_rms of another shape"])
def test_evaluate_refuses_a_malformed_checkpoint_in_one_line(case, tmp_path):
    def change(ckpt):
        if case == "not a dict":
            return 5
        if case == "another hidden size":
            ckpt["hidden_size"] = 32
        else:
            ckpt["obs_rms"]["mean"] = torch.zeros(5)
        return ckpt

    path = doctored(tmp_path, "agent.pt", change)
    proc = refused("evaluate.py", path, "--num-episodes", "2", "--output", tmp_path / "e.json")
    assert_one_line_error(proc, str(path))


def exported(results, seed, eval_json=None, agent=None):
    d = results / "none" / "Hopper-v5" / "spo" / f"s{seed}"
    d.mkdir(parents=True)
    if agent is None:
        shutil.copy(os.path.join(FIXTURE, "agent.pt"), d / "agent.pt")
    else:
        (d / "agent.pt").write_bytes(agent)
    all_attacks = {a: {"mean": 1.0} for a in ("natural", "random", "critic", "mad", "rs", "sarl", "paad")}
    (d / "eval.json").write_text(eval_json if eval_json is not None else json.dumps({"epsilon": 0.075, "results": all_attacks}))
    return d


def test_sweep_tools_skip_a_corrupt_run_by_name_and_never_count_it_done(tmp_path):
    results = tmp_path / "results"
    exported(results, 1)  # complete
    bad_eval = exported(results, 2, eval_json='{"epsilon": 0.075, "resu')
    bad_agent = exported(results, 3, agent=b"\x80\x02 not a checkpoint")
    common = ["--preset", "none", "--algos", "spo", "--seeds", "1", "2", "3", "--root", tmp_path / "sweep", "--results", results]
    for extra in ([], ["--no-learned"]):
        out = run_script("benchmark.py", "run", *common, "--dry-run", *extra).stdout
        assert "3 runs, 1 already complete" in out, out
        for d in (bad_eval, bad_agent):
            assert any(line.startswith("skip Hopper-v5/spo/s") and d.name in line and "unreadable" in line for line in out.splitlines()), out
    out = run_script("benchmark.py", "status", *common).stdout
    assert "1 of 3 done" in out and "unreadable" in out


def test_eps_curve_plot_only_skips_a_corrupt_run_by_name(tmp_path):
    root = eps_curve_root(tmp_path, seeds=(1, 2, 3))
    (root / "Hopper-v5" / "spo" / "s1" / "eval.json").write_text('{"epsilon": 0.0')
    (root / "Hopper-v5" / "spo" / "s3" / "agent.pt").write_bytes(b"garbage")
    proc = run_script("eps_curve.py", "--root", root, "--plot-only", "--multiples", "0", "1", "--paad-multiples",
                      "--output", tmp_path / "r.md", "--figures", tmp_path / "fig")
    assert "| spo | s2 | 1: " in (tmp_path / "r.md").read_text()
    for seed in ("s1", "s3"):
        assert any(seed in line and "unreadable" in line for line in proc.stderr.splitlines()), proc.stderr
