"""spo_ppo.py as a user runs it: smoke run + evaluation, determinism, bad input, checkpoint round trip."""
import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import RUN, TINY, TINY_FLAGS, assert_one_line_error, read_scalars, refused, run_script


def test_smoke_train_then_evaluate(tiny_run, tmp_path):
    run_dir, stdout = tiny_run("spo_ppo.py")  # TINY with --save-every 1
    assert "iter 2/2" in stdout
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["env_id"] == "Hopper-v5" and ckpt["global_step"] == 128 and ckpt["obs_shape"] == [11]
    assert ckpt["obs_rms"]["count"] > 64  # the normaliser saw the rollout
    scalars = read_scalars(str(run_dir))
    for tag in ["losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/clipfrac",
                "losses/explained_variance", "charts/SPS", "charts/learning_rate"]:
        assert len(scalars[tag]) == 2, tag
    # episodes of a random Hopper policy last tens of steps: SAME_STEP's final_info must have been read,
    # with the raw (unnormalised) return and a length that is a whole number of steps
    episodes = scalars["charts/episodic_return"]
    lengths = [l for _, l in scalars["charts/episodic_length"]]
    assert len(episodes) >= 2 and all(l == int(l) and 1 <= l < 128 for l in lengths)
    assert all(0 < r < 10 * l for (_, r), l in zip(episodes, lengths))  # Hopper pays about 1 per step alive

    out = tmp_path / "eval.json"
    proc = run_script("evaluate.py", run_dir / "agent.pt", "--num-episodes", "4", "--output", out)
    report = json.loads(out.read_text())
    natural = report["results"]["natural"]
    assert len(natural["returns"]) == 4 and natural["length_mean"] >= 1
    assert abs(natural["mean"] - np.mean(natural["returns"])) < 1e-6
    assert "| natural |" in proc.stdout


def test_same_seed_same_first_iteration(tiny_run, tmp_path):
    def first_iteration(run_dir):
        s = read_scalars(str(run_dir))
        return [s[tag][0][1] for tag in ["losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/entropy"]]

    # the session's tiny run (the default seed 1, trained in another process) and a second one with the same flags
    run_script("spo_ppo.py", *TINY, *TINY_FLAGS["spo_ppo.py"], "--run-dir", tmp_path / "b")
    a, b = first_iteration(tiny_run("spo_ppo.py")[0]), first_iteration(tmp_path / "b")
    assert a == b
    run_script("spo_ppo.py", *TINY, "--seed", "8", "--run-dir", tmp_path / "c")
    c = read_scalars(str(tmp_path / "c"))["losses/value_loss"][0][1]
    assert c != a[1]  # and the seed matters


def test_unknown_env_id_is_one_line_error(tmp_path):
    proc = refused("spo_ppo.py", "--env-id", "NoSuchEnv-v0", "--run-dir", tmp_path / "x")
    assert_one_line_error(proc, "NoSuchEnv-v0")
    assert not (tmp_path / "x").exists()


def test_existing_checkpoint_is_not_overwritten(tiny_spo_checkpoint):
    before = tiny_spo_checkpoint.read_bytes()
    proc = refused("spo_ppo.py", *TINY, "--run-dir", tiny_spo_checkpoint.parent)
    assert_one_line_error(proc, "already exists")
    assert tiny_spo_checkpoint.read_bytes() == before


def test_evaluate_missing_checkpoint(tmp_path):
    proc = refused("evaluate.py", tmp_path / "nope.pt")
    assert_one_line_error(proc, "does not exist")


def test_evaluate_refuses_other_env_and_other_obs_size(tiny_spo_checkpoint, tmp_path):
    proc = refused("evaluate.py", tiny_spo_checkpoint, "--env-id", "Walker2d-v5")
    assert_one_line_error(proc, "Hopper-v5", "Walker2d-v5")
    # a checkpoint that claims Walker2d but holds an 11-d Hopper policy: the obs size check must catch it
    ckpt = torch.load(tiny_spo_checkpoint, weights_only=True)
    ckpt["env_id"] = "Walker2d-v5"
    torch.save(ckpt, tmp_path / "doctored.pt")
    proc = refused("evaluate.py", tmp_path / "doctored.pt")
    assert_one_line_error(proc, "[11]", "[17]")


def test_checkpoint_round_trip(tmp_path):
    """Saved and reloaded policy act identically on the same normalised observations, and the reloaded
    observation pipeline normalises a raw observation exactly as the training pipeline did."""
    import evaluate
    import spo_ppo

    torch.manual_seed(0)
    args = spo_ppo.Args(env_id="Hopper-v5", num_envs=2)
    envs = gym.vector.SyncVectorEnv([spo_ppo.make_env("Hopper-v5", 0.99) for _ in range(2)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    for _ in range(300):
        envs.step(envs.action_space.sample())
    agent = spo_ppo.Agent(11, 3, 64, init_logstd=-0.5)
    optimizer = torch.optim.Adam(agent.parameters())
    path = str(tmp_path / "agent.pt")
    spo_ppo.save_checkpoint(path, agent, optimizer, envs, args, 600, 1)

    loaded, ckpt = evaluate.load_checkpoint(path)
    x = torch.randn(32, 11)
    with torch.no_grad():
        assert torch.equal(agent.actor_mean(x), loaded.actor_mean(x))
        assert torch.equal(agent.get_value(x), loaded.get_value(x))
    assert torch.equal(agent.actor_logstd, loaded.actor_logstd)

    merged = spo_ppo.merged_rms(envs, "obs_rms")
    mean, var, count = merged["mean"].numpy(), merged["var"].numpy(), merged["count"]
    assert np.array_equal(ckpt["obs_rms"]["mean"].numpy(), mean)
    assert np.array_equal(ckpt["obs_rms"]["var"].numpy(), var) and ckpt["obs_rms"]["count"] == count
    # two sub-envs: the merged statistics equal those of all observations either normaliser saw
    rms = [e.get_wrapper_attr("obs_rms") for e in envs.envs]
    assert count == pytest.approx(rms[0].count + rms[1].count)
    assert np.allclose(mean, (rms[0].mean * rms[0].count + rms[1].mean * rms[1].count) / count)

    eval_env = evaluate.make_eval_env("Hopper-v5", ckpt["obs_rms"])()
    raw_env = gym.make("Hopper-v5")
    obs, _ = eval_env.reset(seed=3)
    raw, _ = raw_env.reset(seed=3)
    expected = np.clip((raw - mean) / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
    assert np.array_equal(obs, expected)
    for _ in range(5):  # the statistics stay frozen during evaluation
        eval_env.step(eval_env.action_space.sample())
    assert np.array_equal(eval_env.get_wrapper_attr("obs_rms").mean, mean)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Walker2d-v5", "Ant-v5"])
def test_training_and_evaluation_print_no_mujoco_warning(env_id, tmp_path):
    """MuJoCo 4 calls HalfCheetah's 'settotalmass' deprecated on every load (50 times per evaluation); we drop
    exactly that message. The other envs printed nothing before and must stay quiet."""
    run_dir = tmp_path / "run"
    train = run_script("spo_ppo.py", *TINY, "--env-id", env_id, "--run-dir", run_dir)
    evaluation = run_script("evaluate.py", run_dir / "agent.pt", "--num-episodes", "3", "--attacks", "random",
                            "--output", tmp_path / "eval.json")
    for proc in (train, evaluation):
        assert "settotalmass" not in proc.stdout + proc.stderr and "WARNING" not in proc.stdout + proc.stderr


def test_other_mujoco_warnings_still_print(capsys):
    from spo_ppo import print_mujoco_warning

    print_mujoco_warning("compiler attribute 'settotalmass' is deprecated and will be removed")
    print_mujoco_warning("Nan, Inf or huge value in QPOS at DOF 0. The simulation is unstable.")
    err = capsys.readouterr().err
    assert "settotalmass" not in err and "WARNING: Nan, Inf or huge value in QPOS" in err


TRAINING_SCRIPTS = ["spo_ppo.py", "arpo_ppo.py", "barpo_ppo.py", "sappo_ppo.py", "radial_ppo.py", "wocar_ppo.py"]


@pytest.mark.parametrize("script", TRAINING_SCRIPTS)
def test_every_training_script_logs_action_spread_and_input_sensitivity(script, tiny_run):
    """Collapse to a constant action must be visible while it happens: both diagnostics every iteration, in
    TensorBoard and on the progress line, next to the adversary's epsilon in the robust scripts."""
    run_dir, stdout = tiny_run(script)
    scalars = read_scalars(str(run_dir))
    for tag in ("policy/action_spread", "policy/input_sensitivity"):
        assert len(scalars[tag]) == 2 and all(np.isfinite(v) and v > 0 for _, v in scalars[tag]), tag
    last = [line for line in stdout.splitlines() if line.startswith("iter 2/2")][0]
    assert " spread " in last and " |dmu/ds| " in last and (script == "spo_ppo.py" or " eps " in last)


def test_policy_diagnostics_measure_spread_and_jacobian():
    from spo_ppo import Agent, policy_diagnostics

    agent = Agent(4, 2)
    torch.manual_seed(0)
    w = torch.randn(2, 4)
    agent.actor_mean = torch.nn.Sequential(torch.nn.Linear(4, 2))  # linear: the Jacobian is W at every state
    with torch.no_grad():
        agent.actor_mean[0].weight.copy_(w)
    obs = torch.randn(256, 4)
    spread, sensitivity = policy_diagnostics(agent, obs)
    assert sensitivity == pytest.approx(w.norm().item(), rel=1e-5)
    assert spread == pytest.approx((obs @ w.t()).std(0).mean().item(), rel=1e-5)
    with torch.no_grad():
        agent.actor_mean[0].weight.zero_()  # a constant-action policy
    assert policy_diagnostics(agent, obs) == (0.0, 0.0)


def test_adam_with_two_groups_steps_only_the_group_that_has_gradients():
    """--value-first relies on this: after zero_grad (grads set to None) a critic-only loss steps only the critic,
    exactly as a separate critic optimiser would, and the actor's Adam state is untouched."""
    from spo_ppo import Agent

    torch.manual_seed(0)
    agent = Agent(5, 2)
    optimizer = torch.optim.Adam([{"params": list(agent.actor_mean.parameters()) + [agent.actor_logstd], "lr": 1e-3},
                                  {"params": agent.critic.parameters(), "lr": 1e-2}], eps=1e-5, fused=True)
    actor_before = [p.detach().clone() for p in agent.actor_mean.parameters()]
    critic_before = [p.detach().clone() for p in agent.critic.parameters()]
    optimizer.zero_grad()
    agent.get_value(torch.randn(8, 5)).pow(2).mean().backward()
    optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(actor_before, agent.actor_mean.parameters()))
    assert not any(torch.equal(a, p) for a, p in zip(critic_before, agent.critic.parameters()))
    assert all(p not in optimizer.state or not optimizer.state[p] for p in agent.actor_mean.parameters())


def test_authors_ppo_flags_train_and_change_the_run(spo_seed3_run, tmp_path):
    """--value-first, --max-grad-norm 0 and --no-anneal-lr are the robust-RL authors' PPO; each must change the run."""
    weights = {"cleanrl": torch.load(spo_seed3_run / "agent.pt", weights_only=True)["agent"]}  # RUN without these flags
    for name, flags in {"value_first": ["--value-first"], "no_clip": ["--max-grad-norm", "0"], "no_anneal": ["--no-anneal-lr"]}.items():
        run_script("spo_ppo.py", *RUN, *flags, "--run-dir", tmp_path / name)
        weights[name] = torch.load(tmp_path / name / "agent.pt", weights_only=True)["agent"]
    for name in ("value_first", "no_clip", "no_anneal"):
        assert not torch.equal(weights[name]["actor_mean.0.weight"], weights["cleanrl"]["actor_mean.0.weight"]), name
    lrs = [v for _, v in read_scalars(str(tmp_path / "no_anneal"))["charts/learning_rate"]]
    assert lrs == pytest.approx([3e-4] * 4)
    proc = refused("spo_ppo.py", *RUN, "--max-grad-norm", "-1", "--run-dir", tmp_path / "bad")
    assert_one_line_error(proc, "--max-grad-norm")


def test_resume_accepts_a_checkpoint_from_before_a_flag_existed(tiny_run, tmp_path):
    """A long run resumes across code changes that add flags: a flag missing from the checkpoint counts as at its default."""
    shutil.copytree(tiny_run("spo_ppo.py")[0], tmp_path / "r")  # TINY with --save-every 1
    ckpt = torch.load(tmp_path / "r" / "agent.pt", weights_only=True)
    del ckpt["args"]["value_first"]
    ckpt["iteration"] = 1
    torch.save(ckpt, tmp_path / "r" / "agent.pt")
    proc = run_script("spo_ppo.py", *TINY, "--run-dir", tmp_path / "r", "--resume")
    assert "resuming" in proc.stdout and "iter 2/2" in proc.stdout
    proc = refused("spo_ppo.py", *TINY, "--value-first", "--run-dir", tmp_path / "r", "--resume")
    assert_one_line_error(proc, "value_first")
