"""radial_ppo.py: reduction to SPO, smoke run + evaluation, the epsilon schedules, the log-likelihood bounds, bad flags."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import attacks
from conftest import RUN, TINY, assert_one_line_error, read_scalars, refused, run_script
from radial_ppo import LogLikelihoodBounds, radial_epsilon
from spo_ppo import Agent

FULL_EPS = ["--eps-ramp-start", "0", "--eps-ramp-end", "0"]  # epsilon_t = epsilon from the first update on


def assert_same_run(a_dir, b_dir, same=True):
    tags = ["charts/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/entropy"]
    a_s, b_s = read_scalars(str(a_dir)), read_scalars(str(b_dir))
    a, b = (torch.load(d / "agent.pt", weights_only=True) for d in (a_dir, b_dir))
    equal = all(a_s[t] == b_s[t] for t in tags) and all(torch.equal(v, b["agent"][k]) for k, v in a["agent"].items())
    equal = equal and torch.equal(a["obs_rms"]["mean"], b["obs_rms"]["mean"]) and a["global_step"] == b["global_step"]
    assert equal == same


@pytest.fixture
def spo_run(spo_seed3_run):
    assert len(read_scalars(str(spo_seed3_run))["losses/policy_loss"]) == 4
    return spo_seed3_run


@pytest.mark.parametrize("flags", [["--epsilon", "0"], ["--kappa", "1", *FULL_EPS]], ids=["eps0", "kappa1"])
def test_zero_robustness_weight_repeats_the_whole_spo_run(flags, spo_run, tmp_path):
    """epsilon = 0 (the authors' kappa_t = 1: clean loss alone), or kappa = 1 with the bounds computed at full
    epsilon (their terms get weight 0): the whole run (rollouts, every update, weights, normaliser) is spo_ppo.py's,
    bit for bit. There is no random draw in RADIAL-PPO, so nothing can shift the rollout's sampling."""
    run_script("radial_ppo.py", *RUN, *flags, "--run-dir", tmp_path / "radial")
    assert_same_run(spo_run, tmp_path / "radial")


@pytest.mark.parametrize("bound_advantages", ["raw", "normalized"])
def test_the_worst_case_term_changes_the_run(bound_advantages, spo_run, tmp_path):
    run_script("radial_ppo.py", *RUN, *FULL_EPS, "--epsilon", "0.2", "--bound-advantages", bound_advantages, "--run-dir", tmp_path / "r")
    assert_same_run(spo_run, tmp_path / "r", same=False)
    s = read_scalars(str(tmp_path / "r"))
    assert all(v > 0 for _, v in s["adversary/bound_width"])
    # pessimistic: the worst-case loss is at least the clean one, and with the same advantages in all six terms
    # a bound term is the worst case wherever the box has width (r_hi > r where A < 0, r_lo < r where A > 0)
    assert all(adv >= clean for (_, adv), (_, clean) in zip(s["losses/policy_loss_adv"], s["losses/policy_loss_clean"]))
    if bound_advantages == "normalized":
        assert all(v > 0.9 for _, v in s["adversary/bound_active"])


def test_smoke_run_logs_schedule_saves_and_evaluates(tiny_run, tmp_path):
    run_dir, stdout = tiny_run("radial_ppo.py")  # TINY
    assert "iter 2/2" in stdout and "bound width" in stdout
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["algo"] == "radial" and ckpt["args"]["epsilon"] == 0.075 and ckpt["args"]["eps_schedule"] == "smooth"
    assert set(ckpt["agent"]) == set(Agent(11, 3).state_dict())  # evaluate.py and the learned attacks load it as is
    s = read_scalars(str(run_dir))
    # 2 iterations x 2 epochs x 4 minibatches; logged: epsilon_t of each iteration's last minibatch (updates 7 and 15 of 16)
    assert [v for _, v in s["adversary/epsilon"]] == pytest.approx([radial_epsilon(0.075, "smooth", 7 / 16), 0.075])
    assert 0 < s["adversary/epsilon"][0][1] < 0.075
    for tag in ["losses/policy_loss_adv", "losses/policy_loss_clean", "adversary/bound_width", "adversary/bound_active"]:
        assert len(s[tag]) == 2, tag
    out = tmp_path / "eval.json"
    run_script("evaluate.py", run_dir / "agent.pt", "--num-episodes", "2", "--attacks", "random", "--output", out)
    report = json.loads(out.read_text())
    assert report["algo"] == "radial" and set(report["results"]) == {"natural", "random"}


@pytest.mark.parametrize("schedule,expected", [
    # the authors' scheduler over 2000 iterations (ramp from iteration 500 to 1500), epsilon 0.075, at the first
    # minibatch of iterations 600, 700, 750, 1000, 1250, 1500 (values re-derived from their code)
    ("smooth", [1.5e-4, 2.36e-3, 5.8e-3, 0.0288, 0.0519, 0.075]),
    ("expo", [7.44e-8, 5.54e-5, 1.51e-3, 0.026, 0.0505, 0.075]),
])
def test_epsilon_schedules_match_the_authors(schedule, expected):
    start, end = 499 / 2000, 1499 / 2000  # their init_step and final_step, in iterations / 2000
    got = [radial_epsilon(0.075, schedule, (it - 1) / 2000, start, end) for it in (600, 700, 750, 1000, 1250, 1500)]
    assert got == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("schedule", ["smooth", "expo"])
def test_epsilon_schedule_shape(schedule):
    eps, start, end = 0.15, 0.25, 0.75
    p = np.linspace(0, 1, 2001)
    values = np.array([radial_epsilon(eps, schedule, x, start, end) for x in p])
    floor = 1e-10 if schedule == "expo" else 0.0
    assert (values[p <= start] == floor).all() and (values[p >= end] == eps).all()
    assert (np.diff(values) >= 0).all()  # non-decreasing
    assert np.abs(np.diff(values)).max() < 2 * eps / (2000 * (end - start) * 0.75)  # continuous: no step above the linear slope
    mid = start + 0.25 * (end - start)
    slope = lambda x: (radial_epsilon(eps, schedule, x + 1e-7, start, end) - radial_epsilon(eps, schedule, x - 1e-7, start, end)) / 2e-7
    linear_slope = (eps - radial_epsilon(eps, schedule, mid, start, end)) / (end - mid)
    # both curves turn linear without a kink: smooth exactly (C1), expo approximately (its rho ignores its floor)
    assert slope(mid - 1e-5) == pytest.approx(linear_slope, rel=1e-3 if schedule == "smooth" else 0.05)
    assert radial_epsilon(0.0, schedule, 0.5) == 0.0 and radial_epsilon(eps, schedule, 0.3, 0.0, 0.0) == eps


def random_actor_batch(seed, n=256, obs_dim=11, act_dim=3):
    torch.manual_seed(seed)
    agent = Agent(obs_dim, act_dim)
    for p in agent.actor_mean.parameters():
        nn.init.normal_(p, std=0.5)
    nn.init.normal_(agent.actor_logstd, std=0.5)
    obs = torch.randn(n, obs_dim)
    with torch.no_grad():
        actions = agent.get_policy(obs).sample()
    return agent, obs, actions


def loglik_bounds(agent, obs, eps, actions):
    """What radial_ppo.py computes: log-likelihood bounds over the IBP box of the actor mean."""
    return LogLikelihoodBounds.apply(obs, actions, eps, agent.actor_logstd, *agent.actor_mean.parameters())


def reference_loglik_bounds(agent, obs, eps, actions):
    """The same, spelled out in autograd: attacks.interval_bounds, then the nearest and the farthest point of
    the box [L, U] to the action per dimension, max(0, a - U, L - a) and max(|a - U|, |a - L|) as the authors write them."""
    lower, upper = attacks.interval_bounds(agent.actor_mean, obs, eps)
    near = torch.clamp(torch.max(actions - upper, lower - actions), min=0)
    far = torch.max((actions - upper).abs(), (actions - lower).abs())
    std = agent.actor_logstd.exp()
    const = -agent.actor_logstd.sum() - 0.5 * actions.shape[1] * np.log(2 * np.pi)
    return const - 0.5 * ((near / std) ** 2).sum(1), const - 0.5 * ((far / std) ** 2).sum(1)


@pytest.mark.parametrize("seed", range(4))
def test_loglikelihood_bounds_are_attained_on_the_box_and_contain_it(seed):
    """An identity "actor" makes the IBP box exactly [s - eps, s + eps]: over it the bounds are attained, the
    highest log-likelihood at the point nearest to the action, the lowest at the farthest corner, and every
    other point of the box lies between."""
    torch.manual_seed(seed)
    n, d, eps = 256, 3, 0.3
    centre, logstd = torch.randn(n, d), 0.5 * torch.randn(1, d)
    actions = centre + torch.randn(n, d) * logstd.exp()
    lower, upper = centre - eps, centre + eps
    hi, lo = LogLikelihoodBounds.apply(centre, actions, eps, logstd, torch.eye(d), torch.zeros(d))
    loglik = lambda mu: torch.distributions.Normal(mu, logstd.exp()).log_prob(actions).sum(1)
    assert torch.allclose(hi, loglik(torch.clamp(actions, lower, upper)), atol=1e-5)
    farthest = torch.where((actions - lower).abs() > (actions - upper).abs(), lower, upper)
    assert torch.allclose(lo, loglik(farthest), atol=1e-5)
    inside = ((actions >= lower) & (actions <= upper)).all(1)
    assert inside.any() and (~inside).any() and torch.allclose(hi[inside], loglik(actions)[inside], atol=1e-5)  # the peak
    for _ in range(50):
        corner = torch.where(torch.rand_like(centre) < 0.5, lower, upper)
        for mu in (corner, lower + torch.rand_like(centre) * (upper - lower)):
            assert (loglik(mu) <= hi + 1e-5).all() and (loglik(mu) >= lo - 1e-5).all()


@pytest.mark.parametrize("seed", range(4))
def test_loglikelihood_bounds_contain_the_loglikelihood_at_sampled_points_of_the_ball(seed):
    """Every point s' of the ball (random points, corners, and the MAD attack's point, the policy's largest
    move) gives log pi(a|s') inside the bounds; at eps = 0 they are the clean log-likelihood."""
    agent, obs, actions = random_actor_batch(seed)
    eps = 0.1
    with torch.no_grad():
        hi, lo = loglik_bounds(agent, obs, eps, actions)
        clean = agent.get_policy(obs).log_prob(actions).sum(1)
        assert (lo <= clean).all() and (clean <= hi).all()
        exact = loglik_bounds(agent, obs, 0.0, actions)
        assert torch.allclose(exact[0], clean, atol=1e-5) and torch.allclose(exact[1], clean, atol=1e-5)
        points = [obs + eps * (torch.rand_like(obs) * 2 - 1) for _ in range(50)]
        points += [obs + eps * torch.randn_like(obs).sign() for _ in range(50)] + [attacks.mad(agent, obs, eps)]
        for x in points:
            loglik = agent.get_policy(x).log_prob(actions).sum(1)
            assert (loglik <= hi + 1e-4).all() and (loglik >= lo - 1e-4).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_hand_written_gradient_matches_autograd(seed, eps):
    """LogLikelihoodBounds backpropagates by hand; values and the gradients to every actor parameter and to
    logstd must equal autograd's through attacks.interval_bounds (for any upstream gradients), with actions
    inside their box in some dimensions and outside in others (both cases of the nearest point)."""
    agent, obs, _ = random_actor_batch(seed, n=64)
    with torch.no_grad():
        lower, upper = attacks.interval_bounds(agent.actor_mean, obs, eps)
        actions = lower + (upper - lower) * (2 * torch.rand_like(lower) - 0.5)  # half of them outside the box
    g_hi, g_lo = torch.randn(64), torch.randn(64)
    params = list(agent.actor_mean.parameters()) + [agent.actor_logstd]
    got, expected = loglik_bounds(agent, obs, eps, actions), reference_loglik_bounds(agent, obs, eps, actions)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad((g_hi * got[0] + g_lo * got[1]).sum(), params)
    expected_grads = torch.autograd.grad((g_hi * expected[0] + g_lo * expected[1]).sum(), params)
    for a, b in zip(grads, expected_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("flags,fragment", [
    (["--epsilon", "-0.5"], "--epsilon"),
    (["--kappa", "1.5"], "--kappa"),
    (["--eps-schedule", "linear"], "--eps-schedule"),
    (["--bound-advantages", "centred"], "--bound-advantages"),
    (["--eps-ramp-start", "0.8", "--eps-ramp-end", "0.5"], "--eps-ramp-start"),
])
def test_bad_flags_are_one_line_errors(flags, fragment, tmp_path):
    proc = refused("radial_ppo.py", *TINY, *flags, "--run-dir", tmp_path / "x")
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "x").exists()


def test_benchmark_runs_radial_with_the_authors_per_env_settings(tmp_path):
    dry = run_script("benchmark.py", "run", "--root", tmp_path, "--algos", "radial", "--envs", "Hopper-v5", "Walker2d-v5",
                     "--seeds", "1", "--preset", "paper", "--results", tmp_path / "results", "--dry-run")
    hopper, walker = [l for l in dry.stdout.splitlines() if "radial_ppo.py" in l]
    assert "--epsilon 0.075 --eps-schedule smooth" in hopper and "--learning-rate 3e-4" in hopper
    assert "--epsilon 0.075 --eps-schedule expo" in walker and "--total-timesteps 2000000" in walker
