"""The learned attacks SA-RL and PA-AD (learned_attack.py sarl / paad): smoke runs with tiny budgets, their pick-up by
evaluate.py, the perturbations' ball property, PA-AD's actor step, bad input, and the same adversaries, bit for bit, as
the two scripts they were before (sarl_attack.py and paad_attack.py of commit BASE)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import attacks
import learned_attack
from conftest import REPO, TINY, assert_one_line_error, read_scalars, refused, run_script
from spo_ppo import Agent

# one iteration of 2 sub-envs x 64 steps
TINY_ADV = [*TINY, "--num-envs", "2"]
ATTACKS = ["sarl", "paad"]
BASE = "447d992"  # the last commit with two copies of the trainer, sarl_attack.py and paad_attack.py


def copy_victim(checkpoint, directory):
    """A private copy of the session's tiny checkpoint: adversaries are written next to their victim."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, directory / "agent.pt")
    return directory / "agent.pt"


@pytest.fixture(scope="module")
def trained_victim(tmp_path_factory, tiny_spo_checkpoint):
    """A victim with a tiny-budget SA-RL adversary and PA-AD director next to it (its tests are in one xdist_group)."""
    victim = copy_victim(tiny_spo_checkpoint, tmp_path_factory.mktemp("learned") / "victim")
    for name in ATTACKS:
        run_script("learned_attack.py", name, victim, *TINY_ADV, "--run-dir", victim.parent / f"tb_{name}")
    return victim


@pytest.mark.xdist_group("trained_victim")
@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_smoke_run_writes_a_self_describing_adversary(trained_victim, name):
    adv = torch.load(trained_victim.parent / f"{name}_eps0.075.pt", weights_only=True)
    assert adv["attack"] == name and adv["env_id"] == "Hopper-v5" and adv["epsilon"] == 0.075
    assert adv["victim_sha1"] == hashlib.sha1(trained_victim.read_bytes()).hexdigest()
    assert adv["global_step"] == 128 and adv["args"]["total_timesteps"] == 128
    assert adv["obs_dim"] == 11 and adv["action_dim"] == (11 if name == "sarl" else 3)  # PA-AD acts in action space
    assert len(adv["reward_rms"]) == 2 and all(r["count"] > 1 for r in adv["reward_rms"])
    net = Agent(adv["obs_dim"], adv["action_dim"], adv["hidden_size"])
    net.load_state_dict(adv["adversary"])  # the state dict matches the recorded sizes
    assert not list(trained_victim.parent.glob("*.tmp"))
    scalars = read_scalars(str(trained_victim.parent / f"tb_{name}"))
    for tag in ["losses/policy_loss", "losses/value_loss", "losses/approx_kl", "charts/SPS", "charts/victim_episodic_return"]:
        assert len(scalars[tag]) >= 1, tag


@pytest.mark.xdist_group("trained_victim")
def test_evaluate_reports_learned_attacks_and_worst_case_over_all(trained_victim, tmp_path):
    out = tmp_path / "eval.json"
    # paad first: each attack's closure must keep its own adversary's arguments whatever the order
    proc = run_script("evaluate.py", trained_victim, "--attacks", "paad,sarl", "--num-episodes", "2", "--output", out)
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"natural", "sarl", "paad"}
    assert report["learned_adversaries"]["sarl"]["path"].endswith("sarl_eps0.075.pt")
    assert report["learned_adversaries"]["paad"]["global_step"] == 128
    for name in ("sarl", "paad"):  # mean and sampled adversary actions are both evaluated, the stronger reported
        assert f"  {name} (mean)" in proc.stdout and f"  {name} (sampled)" in proc.stdout
        result = report["results"][name]
        assert result["variants_evaluated"] == 2 and f"| {name} ({result['variant']}) |" in proc.stdout

    out = tmp_path / "all.json"
    proc = run_script("evaluate.py", trained_victim, "--attacks", "all", "--num-episodes", "2", "--rs-steps", "400",
                      "--rs-epochs", "1", "--output", out)
    report = json.loads(out.read_text())
    means = {k: v["mean"] for k, v in report["results"].items()}
    assert set(means) == {"natural", "random", "critic", "mad", "rs", "sarl", "paad"}
    attacked = {k: v for k, v in means.items() if k != "natural"}
    assert report["worst_case"] == min(attacked.values()) and report["worst_attack"] == min(attacked, key=attacked.get)
    assert "note: skipping" not in proc.stdout


def test_all_without_adversaries_notes_and_explicit_request_is_an_error(tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    out = tmp_path / "all.json"
    proc = run_script("evaluate.py", victim, "--attacks", "all", "--num-episodes", "2", "--rs-steps", "400",
                      "--rs-epochs", "1", "--output", out)
    assert set(json.loads(out.read_text())["results"]) == {"natural", "random", "critic", "mad", "rs"}
    assert f"note: skipping sarl" in proc.stdout and f"python learned_attack.py sarl {victim} --epsilon 0.075" in proc.stdout
    assert f"note: skipping paad" in proc.stdout and "python learned_attack.py paad" in proc.stdout
    for name in ATTACKS:
        proc = refused("evaluate.py", victim, "--attacks", name, "--num-episodes", "2")
        assert_one_line_error(proc, name, f"learned_attack.py {name}", "--train-learned")


@pytest.mark.xdist_group("trained_victim")
def test_stale_adversary_is_ignored(trained_victim, tmp_path):
    victim = copy_victim(trained_victim, tmp_path / "victim")
    shutil.copy(trained_victim.parent / "sarl_eps0.075.pt", victim.parent)
    proc = run_script("evaluate.py", victim, "--attacks", "sarl", "--num-episodes", "2", "--output", tmp_path / "a.json")
    assert "sarl" in json.loads((tmp_path / "a.json").read_text())["results"]  # same bytes: accepted
    ckpt = torch.load(victim, weights_only=True)
    ckpt["global_step"] += 1  # another version of the victim
    torch.save(ckpt, victim)
    proc = refused("evaluate.py", victim, "--attacks", "sarl", "--num-episodes", "2")
    assert_one_line_error(proc, "sha1")
    proc = refused("evaluate.py", victim, "--attacks", "sarl", "--epsilon", "0.05", "--num-episodes", "2")
    assert_one_line_error(proc, "no sarl_eps0.05.pt")  # an adversary is specific to its eps


def test_train_learned_trains_the_missing_adversaries_in_a_subprocess(tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    out = tmp_path / "eval.json"
    # -X importtime lists every module this process imports (not its subprocesses'): evaluate.py runs as __main__ and
    # must not be imported a second time as `evaluate`, as it was when it imported the trainer, which imports it
    proc = subprocess.run([sys.executable, "-X", "importtime", os.path.join(REPO, "evaluate.py"), str(victim), "--attacks",
                           "sarl,paad", "--num-episodes", "2", "--train-learned", "--learned-args=" + " ".join(TINY_ADV),
                           "--output", str(out)], capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and "attacks" in imported  # the trace is complete
    assert "evaluate" not in imported and "learned_attack" not in imported
    assert (victim.parent / "sarl_eps0.075.pt").is_file() and (victim.parent / "paad_eps0.075.pt").is_file()
    assert set(json.loads(out.read_text())["results"]) == {"natural", "sarl", "paad"}
    assert proc.stdout.count("training one now") == 2 and "saved " in proc.stdout  # the trainer's output is the user's
    proc = run_script("evaluate.py", victim, "--attacks", "sarl,paad", "--num-episodes", "2", "--train-learned",
                      "--learned-args=" + " ".join(TINY_ADV), "--output", out)
    assert "training one now" not in proc.stdout  # present and fresh: reused


def test_train_learned_stops_with_the_trainers_one_error_line(tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    proc = refused("evaluate.py", victim, "--attacks", "paad", "--num-episodes", "2", "--train-learned",
                   "--learned-args=--gamma 5", "--output", tmp_path / "eval.json")
    assert_one_line_error(proc, "--gamma")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["agent.pt"] and not (tmp_path / "eval.json").exists()


def test_grid_keeps_the_setting_with_the_lowest_victim_return(tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    proc = run_script("learned_attack.py", "paad", victim, *TINY_ADV, "--grid", "--grid-learning-rates", "1e-4", "1e-2",
                      "--grid-episodes", "2", "--run-dir", tmp_path / "tb")
    adv = torch.load(victim.parent / "paad_eps0.075.pt", weights_only=True)
    assert [g["learning_rate"] for g in adv["grid"]] == [1e-4, 1e-2]
    best = min(adv["grid"], key=lambda g: g["victim_return"])
    assert adv["args"]["learning_rate"] == best["learning_rate"]
    assert sum(line.startswith("grid: lr") for line in proc.stdout.splitlines()) == 2 and (tmp_path / "tb" / "lr0.01_ent0").is_dir()


@pytest.fixture(scope="module")
def base_scripts(tmp_path_factory):
    """The repository's scripts as they were at BASE, in a directory of their own (their imports resolve there)."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", BASE], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"commit {BASE} is not in this clone's history")
    where = tmp_path_factory.mktemp("base")
    for name in [n for n in listed.stdout.split() if n.endswith(".py")]:
        source = subprocess.run(["git", "show", f"{BASE}:{name}"], cwd=REPO, capture_output=True, check=True).stdout
        (where / name).write_bytes(source)
    return where


def all_scalars(run_dir):
    """{(run, tag): [(step, value), ...]} of every TensorBoard run under run_dir (--grid writes one per setting)."""
    found = {}
    for root, _, files in sorted(os.walk(run_dir)):
        if any(f.startswith("events.out.tfevents") for f in files):
            found.update({(os.path.relpath(root, run_dir), tag): v for tag, v in read_scalars(root).items()})
    return found


@pytest.mark.parametrize("name, flags", [
    ("sarl", ["--total-timesteps", "256", "--eval-at", "128", "256", "--eval-episodes", "2"]),  # with a budget curve
    ("paad", ["--grid", "--grid-learning-rates", "1e-3", "3e-3", "--grid-episodes", "2", "--actor-steps", "5"]),  # with a grid
])
def test_same_adversary_bit_for_bit_as_the_two_scripts_it_replaces(name, flags, base_scripts, tiny_spo_checkpoint, tmp_path):
    """learned_attack.py draws the same random numbers as sarl_attack.py / paad_attack.py did for the same seed and
    flags: the same weights, the same record, the same format, the same logged returns and losses. Its speed-ups
    (the actor, the reward normaliser, the update's bookkeeping, the env's dropped info) are held to this."""
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    run_script(base_scripts / f"{name}_attack.py", victim, *TINY_ADV, *flags, "--output", tmp_path / "before.pt",
               "--run-dir", tmp_path / "tb_before")
    run_script("learned_attack.py", name, victim, *TINY_ADV, *flags, "--output", tmp_path / "after.pt", "--run-dir", tmp_path / "tb_after")
    before, after = (torch.load(tmp_path / f, weights_only=True) for f in ("before.pt", "after.pt"))
    assert before["adversary"].keys() == after["adversary"].keys()
    for key, value in before["adversary"].items():
        assert torch.equal(value, after["adversary"][key]), key
    timing = {"train_seconds", "train_cpu_seconds"}
    assert set(before) == set(after)
    for key in set(before) - timing - {"adversary", "args", "curve"}:
        assert before[key] == after[key], key
    assert [{k: v for k, v in p.items() if k not in timing} for p in before["curve"]] == \
           [{k: v for k, v in p.items() if k not in timing} for p in after["curve"]]
    assert len(before["curve"]) == (2 if name == "sarl" else 0) and len(before["grid"]) == (2 if name == "paad" else 0)
    where = {"exp_name", "output", "run_dir"}  # the script's name and where this test wrote
    assert {k: v for k, v in before["args"].items() if k not in where} == {k: v for k, v in after["args"].items() if k not in where}
    logged_before, logged_after = all_scalars(tmp_path / "tb_before"), all_scalars(tmp_path / "tb_after")
    assert set(logged_before) == set(logged_after)
    assert any(tag == "charts/victim_episodic_return" for _, tag in logged_before)  # the runs crossed an episode end
    for key, values in logged_before.items():  # every scalar but the timing, bit for bit
        if key[1] != "charts/SPS":
            assert logged_after[key] == values, key


def random_victim_and_adversaries(seed):
    g = np.random.default_rng(seed)
    obs_dim, act_dim, hidden, batch = int(g.integers(1, 20)), int(g.integers(1, 6)), int(g.integers(4, 32)), int(g.integers(1, 50))
    torch.manual_seed(seed)
    nets = [Agent(obs_dim, act_dim, hidden), Agent(obs_dim, obs_dim, hidden), Agent(obs_dim, act_dim, hidden)]
    for net in nets:  # large weights: the adversaries' outputs go far outside [-1, 1]
        for p in net.parameters():
            nn.init.normal_(p, std=float(g.uniform(0.3, 3)))
    obs = torch.randn(batch, obs_dim) * float(g.uniform(0.1, 5))
    return nets, obs


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.3, 2.0])
def test_learned_perturbations_stay_in_the_ball(seed, eps):
    (victim, sarl_net, director), obs = random_victim_and_adversaries(seed)
    sarl_args, paad_args = learned_attack.SarlArgs(victim="-"), learned_attack.PaadArgs(victim="-")  # PA-AD: 10 steps of eps/10
    with torch.no_grad():
        sarl_action = sarl_net.get_action_and_value(obs)[0]  # a training-time sample, as the rollout uses
        direction = director.get_action_and_value(obs)[0]
    produced = {
        "sarl (rollout)": learned_attack.perturb(victim, obs, eps, sarl_action, sarl_args),
        "sarl (evaluation)": attacks.bounded_perturbation(obs, eps, sarl_net.actor_mean(obs)),
        "sarl (huge action)": attacks.bounded_perturbation(obs, eps, 1e6 * torch.randn_like(obs)),
        "paad (rollout)": learned_attack.perturb(victim, obs, eps, direction, paad_args),
        "paad (evaluation)": attacks.paad_actor(victim, obs, eps, director.actor_mean(obs)),
        "paad (3 big steps)": attacks.paad_actor(victim, obs, eps, direction, steps=3, step_size=eps),
    }
    for name, x in produced.items():
        assert x.shape == obs.shape and x.dtype == obs.dtype and not x.requires_grad, name
        if eps == 0:
            assert torch.equal(x, obs), name
        else:
            assert (x <= obs + eps).all() and (x >= obs - eps).all(), name
            assert (x != obs).any(), name


def test_bounded_perturbation_is_eps_hardtanh_and_refuses_negative_eps():
    obs = torch.zeros(1, 4)
    x = attacks.bounded_perturbation(obs, 0.5, torch.tensor([[-3.0, -0.5, 0.2, 7.0]]))
    assert torch.allclose(x, torch.tensor([[-0.5, -0.25, 0.1, 0.5]]))
    with pytest.raises(ValueError):
        attacks.bounded_perturbation(obs, -0.1, obs)
    with pytest.raises(ValueError):
        attacks.paad_actor(Agent(4, 2), obs, -0.1, torch.ones(1, 2))


@pytest.mark.parametrize("seed", range(5))
def test_paad_actor_moves_the_action_along_the_direction_more_than_random(seed):
    (victim, _, _), _ = random_victim_and_adversaries(seed)
    obs_dim, act_dim = victim.actor_mean[0].in_features, victim.actor_mean[-1].out_features
    obs = torch.randn(256, obs_dim)
    d = torch.randn(256, act_dim)
    d = d / d.norm(dim=-1, keepdim=True)
    eps = 0.1
    torch.manual_seed(seed)
    with torch.no_grad():
        mu = victim.actor_mean(obs)
        along_paad = ((victim.actor_mean(attacks.paad_actor(victim, obs, eps, d)) - mu) * d).sum(-1).mean()
        along_random = ((victim.actor_mean(attacks.random(victim, obs, eps)) - mu) * d).sum(-1).mean()
        along_opposite = ((victim.actor_mean(attacks.paad_actor(victim, obs, eps, -d)) - mu) * d).sum(-1).mean()
    assert along_paad > 0 and along_paad > along_random + 0.5 * along_paad.abs()
    assert along_opposite < 0  # the direction, not just any large move, is what the actor follows


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_bad_input_is_one_line_error(name, tiny_spo_checkpoint, tmp_path):
    script = ("learned_attack.py", name)
    assert_one_line_error(refused(*script, tmp_path / "nope.pt", *TINY_ADV), "does not exist")
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    assert_one_line_error(refused(*script, victim, "--env-id", "Walker2d-v5", *TINY_ADV), "Hopper-v5", "Walker2d-v5")
    assert_one_line_error(refused(*script, victim, "--epsilon", "-0.1", *TINY_ADV), "epsilon")
    if name == "sarl":  # PA-AD's actor flags are not SA-RL's: refused, not ignored
        assert refused(*script, victim, "--actor-steps", "3", *TINY_ADV).returncode != 0
    assert not list(victim.parent.glob(f"{name}_*"))  # nothing written


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_nan_loss_is_one_line_error_and_keeps_the_existing_adversary(name, tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    existing = victim.parent / f"{name}_eps0.075.pt"
    existing.write_bytes(b"an earlier adversary")
    # an infinite std makes every log-probability NaN
    proc = run_script("learned_attack.py", name, victim, *TINY_ADV, "--init-logstd", "1000", "--overwrite", "--run-dir", tmp_path / "tb", check=False)
    assert_one_line_error(proc, "non-finite")
    assert existing.read_bytes() == b"an earlier adversary"
    assert not list(victim.parent.glob("*.tmp"))


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_budget_flags_out_of_range_are_one_line_errors(name, tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    bad = [
        (["--total-timesteps", "0"], "--total-timesteps"),
        (["--num-minibatches", "0"], "--num-minibatches"),
        (["--update-epochs", "0"], "--update-epochs"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--ent-coef", "-0.01"], "--ent-coef"),
        (["--early-stop-window", "-1"], "--early-stop-window"),
        (["--early-stop-patience", "0"], "--early-stop-patience"),
        (["--eval-episodes", "0"], "--eval-episodes"),
        (["--eval-at", "64", "129"], "--eval-at"),  # beyond --total-timesteps 128
        (["--eval-at", "0"], "--eval-at"),
    ]
    for flags, fragment in bad:
        proc = refused("learned_attack.py", name, victim, *TINY_ADV, *flags)
        assert_one_line_error(proc, fragment)
    assert not list(victim.parent.glob(f"{name}_*"))  # nothing written


def test_stalled_needs_patience_windows_without_a_real_drop():
    assert not learned_attack.stalled([1000, 900], patience=2, min_drop=0.02)  # not enough windows yet
    assert not learned_attack.stalled([1000, 900, 800], patience=1, min_drop=0.02)  # still falling
    assert learned_attack.stalled([1000, 900, 895], patience=1, min_drop=0.02)  # 5 < 2 % of 1000
    assert not learned_attack.stalled([1000, 900, 950, 870], patience=2, min_drop=0.02)  # the last window fell 30
    assert learned_attack.stalled([1000, 900, 950, 890], patience=2, min_drop=0.02)
    assert learned_attack.stalled([1000, 900, 950, 890], patience=2, min_drop=0.0) is False  # any drop counts at 0


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_early_stop_stops_and_records_where(name, tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    # a drop of 1e9 x the first window never counts: the run stops after patience + 1 windows of >= 128 steps, at 256 of 384
    proc = run_script("learned_attack.py", name, victim, *TINY_ADV, "--total-timesteps", "384", "--early-stop-window", "128",
                      "--early-stop-patience", "1", "--early-stop-min-drop", "1e9", "--run-dir", tmp_path / "tb")
    adv = torch.load(victim.parent / f"{name}_eps0.075.pt", weights_only=True)
    assert adv["early_stop_step"] == adv["global_step"] == 256 and len(adv["early_stop_window_means"]) == 2
    assert "early stop at step 256" in proc.stdout
    means = adv["early_stop_window_means"]  # the adversary saved is the one of the window with the lowest victim return
    assert adv["kept_step"] == 128 * (1 + means.index(min(means)))
    # without the early stop (window 0) the same flags train the whole budget (replacing the first adversary: --overwrite)
    run_script("learned_attack.py", name, victim, *TINY_ADV, "--total-timesteps", "384", "--early-stop-window", "0",
               "--early-stop-patience", "1", "--early-stop-min-drop", "1e9", "--overwrite", "--run-dir", tmp_path / "tb0")
    adv = torch.load(victim.parent / f"{name}_eps0.075.pt", weights_only=True)
    assert adv["early_stop_step"] is None and adv["global_step"] == adv["kept_step"] == 384


@pytest.mark.parametrize("name", ["sarl", "paad"])
def test_budget_curve_is_evaluate_py_and_does_not_change_training(name, tiny_spo_checkpoint, tmp_path):
    victim = copy_victim(tiny_spo_checkpoint, tmp_path / "victim")
    flags = [*TINY_ADV, "--total-timesteps", "384", "--early-stop-window", "0"]
    run_script("learned_attack.py", name, victim, *flags, "--output", tmp_path / "plain.pt", "--run-dir", tmp_path / "tb0")
    proc = run_script("learned_attack.py", name, victim, *flags, "--eval-at", "100", "384", "--eval-episodes", "3", "--run-dir", tmp_path / "tb")
    adv = torch.load(victim.parent / f"{name}_eps0.075.pt", weights_only=True)
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)
    for key, value in plain["adversary"].items():  # the evaluations leave the training's random streams alone
        assert torch.equal(value, adv["adversary"][key]), key
    assert [p["step"] for p in adv["curve"]] == [128, 384] and sum(l.startswith("curve: step") for l in proc.stdout.splitlines()) == 2
    scalars = read_scalars(str(tmp_path / "tb"))
    assert [s for s, _ in scalars["curve/victim_return_mean"]] == [128, 384]
    # the last point is what evaluate.py reports for the saved adversary with as many episodes
    out = tmp_path / "eval.json"
    proc = run_script("evaluate.py", victim, "--attacks", name, "--num-episodes", "3", "--output", out)
    last = adv["curve"][-1]
    for label in ("mean", "sampled"):
        line = next(l for l in proc.stdout.splitlines() if l.startswith(f"  {name} ({label})"))
        assert float(line.split()[-1]) == pytest.approx(last[label], abs=0.05), line
