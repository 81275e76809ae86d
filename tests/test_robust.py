"""arpo_ppo.py and barpo_ppo.py: smoke runs, reduction to SPO at eps = 0 and kappa = 0, inner solvers, bad input."""
import difflib
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import attacks
from conftest import RUN, TINY, assert_one_line_error, read_scalars, refused, run_script
from spo_ppo import Agent, clipped_surrogate


@pytest.mark.parametrize("script", ["arpo_ppo.py", "barpo_ppo.py"])
def test_smoke_run_logs_adversary_and_evaluates(script, tiny_run, tmp_path):
    run_dir, stdout = tiny_run(script)  # TINY with --eps-warmup 0.5
    assert "iter 2/2" in stdout
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["algo"] == script.split("_")[0] and ckpt["args"]["epsilon"] == 0.075  # Hopper default
    s = read_scalars(str(run_dir))
    # warm-up over half of the 2 updates: 0 at the first update, full epsilon from the second on
    assert [v for _, v in s["adversary/epsilon"]] == pytest.approx([0.0, 0.075])
    for tag in ["losses/policy_loss_adv", "losses/policy_loss_clean", "losses/policy_loss"]:
        assert len(s[tag]) == 2
    # the inner-vs-random diagnostics are logged (their ordering is tested on non-trivial nets below: a
    # freshly initialised actor is nearly constant, so at this budget the KL gradient is below the SGLD noise)
    inner, random = ("kl_inner", "kl_random") if script.startswith("barpo") else ("loss_increase_inner", "loss_increase_random")
    assert len(s[f"adversary/{inner}"]) == len(s[f"adversary/{random}"]) == 2
    out = tmp_path / "eval.json"
    run_script("evaluate.py", run_dir / "agent.pt", "--num-episodes", "2", "--attacks", "random", "--output", out)
    assert json.loads(out.read_text())["algo"] == script.split("_")[0]


def code_lines(script):
    """The lines of a training script after its module docstring."""
    lines = (Path(__file__).parent.parent / script).read_text().splitlines()
    return lines[[i for i, line in enumerate(lines) if '"""' in line][1] + 1 :]


@pytest.mark.parametrize("script,tag", [("arpo_ppo.py", "# ARPO:"), ("barpo_ppo.py", "# BARPO:"), ("sappo_ppo.py", "# SA-PPO:"), ("wocar_ppo.py", "# WocaR:"), ("radial_ppo.py", "# RADIAL")])
def test_robust_script_is_spo_plus_tagged_lines(script, tag):
    """The alignment the README promises: a fix to spo_ppo.py that is not carried over fails here."""
    spo, robust = code_lines("spo_ppo.py"), code_lines(script)
    algo = script.split("_")[0]
    renamed = {  # SPO lines a robust script changes in place: its name and the progress line
        '        "algo": "spo",': f'        "algo": "{algo}",',
        '        if checkpoint["algo"] != "spo" or changed:': f'        if checkpoint["algo"] != "{algo}" or changed:',
    }
    if algo == "wocar":  # its Q networks go into the checkpoint (--resume restores them): save_checkpoint takes them as `extra`
        for line in spo:
            if line.startswith("def save_checkpoint("):
                renamed[line] = line[: -len("):")] + ", extra=None):  # WocaR: extra = the Q networks"
            elif line.lstrip().startswith("save_checkpoint("):
                renamed[line] = line[: -len(")")] + ", q_state())"
    progress = next(line for line in spo if line.lstrip().startswith('print(f"iter '))
    policy_loss = next(line for line in spo if line.lstrip().startswith("pg_loss = clipped_surrogate("))
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=spo, b=robust, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        changed, added = spo[i1:i2], robust[j1:j2]
        if changed and all(line in renamed for line in changed):
            assert added == [renamed[line] for line in changed]
        elif changed == [progress]:  # the progress line gains the adversary's diagnostics at its end
            assert len(added) == 1 and added[0].startswith(progress[: progress.index("{recent}") + 8])
        else:  # everything else is added in blocks that say whose they are; only the policy loss is replaced
            assert changed in ([], [policy_loss]), f"{script} changes SPO lines {changed}"
            assert any(tag in line for line in added), f"{script}: untagged change {changed} -> {added}"


@pytest.mark.parametrize("script", ["arpo_ppo.py", "barpo_ppo.py"])
def test_epsilon_warmup_is_linear(script, tmp_path):
    run_script(script, "--total-timesteps", "256", "--num-steps", "64", "--num-minibatches", "2",
               "--update-epochs", "1", "--epsilon", "0.1", "--run-dir", tmp_path / "r")
    eps = [v for _, v in read_scalars(str(tmp_path / "r"))["adversary/epsilon"]]
    assert eps == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])  # 4 updates, warm-up over the first 3


@pytest.mark.parametrize("script", ["arpo_ppo.py", "barpo_ppo.py"])
def test_eps0_kappa0_repeats_the_whole_spo_run(script, spo_seed3_run, tmp_path):
    """With eps = 0 the inner solution is the clean state and with kappa = 0 the guidance vanishes; the
    adversary draws from its own generator, so the whole run (rollouts, every update, the final weights and
    normaliser) must be spo_ppo.py's, bit for bit."""
    tags = ["charts/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/entropy"]
    run_script(script, *RUN, "--epsilon", "0", "--kappa", "0", "--run-dir", tmp_path / "rob")
    spo, rob = read_scalars(str(spo_seed3_run)), read_scalars(str(tmp_path / "rob"))
    assert len(spo["losses/policy_loss"]) == 4 and len(spo["charts/episodic_return"]) >= 2
    for tag in tags:
        assert rob[tag] == spo[tag], tag
    a, b = (torch.load(d / "agent.pt", weights_only=True) for d in (spo_seed3_run, tmp_path / "rob"))
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    assert torch.equal(a["obs_rms"]["mean"], b["obs_rms"]["mean"]) and a["global_step"] == b["global_step"]
    # and with eps > 0 the runs part: the comparison can fail
    run_script(script, *RUN, "--epsilon", "0.2", "--eps-warmup", "0", "--kappa", "0", "--run-dir", tmp_path / "rob2")
    c = torch.load(tmp_path / "rob2" / "agent.pt", weights_only=True)
    assert not torch.equal(c["agent"]["actor_mean.0.weight"], a["agent"]["actor_mean.0.weight"])


def random_policy_batch(seed, n=128, obs_dim=11, act_dim=3):
    torch.manual_seed(seed)
    agent = Agent(obs_dim, act_dim)
    for p in agent.actor_mean.parameters():
        nn.init.normal_(p, std=0.5)
    obs = torch.randn(n, obs_dim)
    with torch.no_grad():
        actions, logprobs, _, _ = agent.get_action_and_value(obs)
    return agent, obs, actions, logprobs, torch.randn(n)


@pytest.mark.parametrize("seed", range(4))
def test_arpo_inner_stays_in_ball_and_raises_ppo_loss_above_random(seed):
    import arpo_ppo

    agent, obs, actions, logprobs, adv = random_policy_batch(seed)
    eps = 0.1
    x = arpo_ppo.arpo_inner(agent, obs, actions, logprobs, adv, eps, 10, None, 0.2)
    assert x.shape == obs.shape and (x <= obs + eps).all() and (x >= obs - eps).all() and not x.requires_grad
    loss_at = lambda s: clipped_surrogate(agent.get_action_and_value(s, actions)[1], logprobs, adv, 0.2).mean().item()
    with torch.no_grad():
        assert loss_at(x) > loss_at(attacks.random(agent, obs, eps)) and loss_at(x) > loss_at(obs)
    assert torch.equal(arpo_ppo.arpo_inner(agent, obs, actions, logprobs, adv, 0.0, 10, None, 0.2), obs)


@pytest.mark.parametrize("seed", range(4))
def test_barpo_inner_stays_in_ball_and_raises_kl_above_random(seed):
    import barpo_ppo

    agent, obs, *_ = random_policy_batch(seed)
    eps = 0.1
    x = barpo_ppo.barpo_inner(agent, obs, eps, 10, None, 1e-5)
    assert (x <= obs + eps).all() and (x >= obs - eps).all()
    assert attacks.kl_divergence(agent, obs, x).mean() > 2 * attacks.kl_divergence(agent, obs, attacks.random(agent, obs, eps)).mean()


@pytest.mark.parametrize("seed", range(3))
def test_barpo_inner_is_sappo_sgld_in_the_authors_units(seed):
    """BARPO's inner solver is the SA-PPO authors' SGLD (noise relative to the gradient of the minibatch mean),
    step for step: the same solution as an autograd restatement of their solver, at beta = 1e-5 and beta = 1."""
    import barpo_ppo
    from test_sappo import authors_sgld_regulariser, random_actor

    agent, obs = random_actor(seed)
    eps = 0.1
    for beta in (1e-5, 1.0):
        x = barpo_ppo.barpo_inner(agent, obs, eps, 10, None, beta, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            got = (((agent.actor_mean(x) - agent.actor_mean(obs)) / agent.actor_logstd.exp()) ** 2).sum(-1)
        expected = authors_sgld_regulariser(agent, obs, eps, 10, beta, torch.Generator().manual_seed(seed)).detach()
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12), beta
    # the units matter at a temperature where the noise competes with the gradient (it does not at 1e-5 here)
    unscaled = attacks.mad(agent, obs, eps, beta=1.0, generator=torch.Generator().manual_seed(seed))
    assert not torch.equal(unscaled, barpo_ppo.barpo_inner(agent, obs, eps, 10, None, 1.0, torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("script", ["arpo_ppo.py", "barpo_ppo.py"])
@pytest.mark.parametrize("flag", ["--epsilon", "--kappa"])
def test_negative_epsilon_or_kappa_is_one_line_error(script, flag, tmp_path):
    proc = refused(script, *TINY, flag, "-0.5", "--run-dir", tmp_path / "x")
    assert_one_line_error(proc, flag)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("seed", range(4))
def test_hand_written_inner_gradients_match_autograd(seed):
    """The inner solvers differentiate by hand for speed (attacks.mlp_input_grad, attacks.gaussian_ppo_loss_grad);
    both must equal autograd's gradient of the objective they stand for."""
    import arpo_ppo

    agent, obs, actions, logprobs, adv = random_policy_batch(seed)
    x = (obs + 0.05 * torch.randn_like(obs)).requires_grad_(True)
    # MAD / BARPO: sum_j ((mu(x) - mu(s)) / sigma)^2
    mu_clean, var = agent.actor_mean(obs).detach(), agent.actor_logstd.exp().detach() ** 2
    kl2 = (((agent.actor_mean(x) - mu_clean) ** 2) / var).sum()
    (expected,) = torch.autograd.grad(kl2, x)
    got = attacks.mlp_input_grad(agent.actor_mean, x.detach(), lambda mu: 2 * (mu - mu_clean) / var)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
    # ARPO: sum_i clipped PPO loss at x, the head gradient arpo_inner hands to attacks.pgd
    ppo = clipped_surrogate(agent.get_action_and_value(x, actions)[1], logprobs, adv, 0.2).sum()
    (expected,) = torch.autograd.grad(ppo, x)
    head_grad = attacks.gaussian_ppo_loss_grad(agent, actions, logprobs, adv, 0.2)
    got = attacks.mlp_input_grad(agent.actor_mean, x.detach(), head_grad)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
    # the clipped branch (zero slope) is the max for some samples, so both branches were exercised
    ratio = (agent.get_action_and_value(x, actions)[1] - logprobs).exp()
    clipped_active = ((adv > 0) & (ratio > 1.2)) | ((adv < 0) & (ratio < 0.8))
    assert clipped_active.any() and (~clipped_active).any()


def test_mlp_input_grad_falls_back_to_autograd_for_other_actors():
    actor = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(7, 5, requires_grad=True)
    (expected,) = torch.autograd.grad((actor(x) ** 2).sum(), x)
    assert torch.allclose(attacks.mlp_input_grad(actor, x.detach(), lambda mu: 2 * mu), expected)
    with torch.inference_mode():  # the learned attacks call it from an inference-mode rollout
        x_inference = x.detach().clone()
        assert torch.allclose(attacks.mlp_input_grad(actor, x_inference, lambda mu: 2 * mu), expected)


@pytest.mark.parametrize("script,algo_flag", [("arpo_ppo.py", ["--soft-worst-case-lambda", "0"]), ("barpo_ppo.py", ["--inner-beta", "-1"])])
def test_other_bad_flags_are_one_line_errors(script, algo_flag, tmp_path):
    for flags in (algo_flag, ["--inner-step-size", "0"], ["--num-minibatches", "0"], ["--num-minibatches", "3"], ["--update-epochs", "0"]):
        proc = refused(script, *TINY, *flags, "--run-dir", tmp_path / "x")
        assert_one_line_error(proc, flags[0] if flags[0] != "--num-minibatches" or flags[1] == "0" else "divide")
    assert not (tmp_path / "x").exists()


def test_resume_refuses_another_algorithm_or_other_arguments(tiny_run, tmp_path):
    shutil.copytree(tiny_run("spo_ppo.py")[0], tmp_path / "r")  # a finished SPO run of TINY (--save-every is not compared)
    before = (tmp_path / "r" / "agent.pt").read_bytes()
    assert_one_line_error(refused("barpo_ppo.py", *TINY, "--run-dir", tmp_path / "r", "--resume"), "spo run")
    assert_one_line_error(refused("spo_ppo.py", *TINY, "--learning-rate", "1e-3", "--run-dir", tmp_path / "r", "--resume"), "learning_rate")
    assert_one_line_error(refused("spo_ppo.py", *TINY, "--resume"), "--run-dir")
    assert (tmp_path / "r" / "agent.pt").read_bytes() == before


@pytest.mark.parametrize("seed", range(3))
def test_arpo_inner_fast_path_takes_the_autograd_steps(seed):
    """arpo_inner states its objective as the outer update's loss; the hand-derived fast path must take the same
    steps as autograd on that objective (sign steps: equal unless a gradient entry is within rounding of 0)."""
    import arpo_ppo

    agent, obs, actions, logprobs, adv = random_policy_batch(seed)
    solve = lambda autograd: arpo_ppo.arpo_inner(agent, obs, actions, logprobs, adv, 0.1, 10, None, 0.2,
                                                 torch.Generator().manual_seed(seed), autograd, verify=True)
    fast, reference = solve(False), solve(True)
    assert (fast == reference).float().mean() > 0.99


def test_arpo_inner_stops_when_the_fast_gradient_no_longer_matches_the_loss():
    """A student who changes the policy (here: a tanh-squashed mean in get_policy) changes ppo_loss but not the
    hand-derived gradient: the once-per-iteration check must refuse, and --inner-autograd must still work."""
    import arpo_ppo

    agent, obs, actions, logprobs, adv = random_policy_batch(0)
    plain = agent.get_policy
    agent.get_policy = lambda x: torch.distributions.Normal(torch.tanh(plain(x).loc), plain(x).scale)
    with pytest.raises(SystemExit, match="--inner-autograd"):
        arpo_ppo.arpo_inner(agent, obs, actions, logprobs, adv, 0.1, 10, None, 0.2, verify=True)
    x = arpo_ppo.arpo_inner(agent, obs, actions, logprobs, adv, 0.1, 10, None, 0.2, autograd=True)
    assert (x <= obs + 0.1).all() and (x >= obs - 0.1).all()
