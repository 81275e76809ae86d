"""attacks.py properties over random small networks, and the attack evaluation command."""
import inspect
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn

import attacks
from conftest import REPO, assert_one_line_error, refused, run_script
from spo_ppo import Agent


def random_setting(seed):
    g = np.random.default_rng(seed)
    obs_dim, act_dim, hidden, batch = int(g.integers(1, 20)), int(g.integers(1, 6)), int(g.integers(4, 32)), int(g.integers(1, 50))
    torch.manual_seed(seed)
    agent = Agent(obs_dim, act_dim, hidden, init_logstd=float(g.uniform(-1, 0.5)))
    for p in agent.parameters():  # break the tiny output init so every attack has a gradient to follow
        nn.init.normal_(p, std=0.5)
    q_net = nn.Sequential(nn.Linear(obs_dim + act_dim, 16), nn.Tanh(), nn.Linear(16, 1))
    q = lambda s, a: q_net(torch.cat([s, a], -1))
    obs = torch.randn(batch, obs_dim) * float(g.uniform(0.1, 5))
    return agent, q, obs


def all_attacks(agent, q, obs, eps):
    return {
        "random": attacks.random(agent, obs, eps),
        "critic": attacks.critic(agent, obs, eps),
        "mad": attacks.mad(agent, obs, eps),
        "mad_beta1": attacks.mad(agent, obs, eps, beta=1.0, normalize_sigma=True),
        "q_pgd": attacks.q_pgd(agent, obs, eps, q),
    }


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.3, 2.0])
def test_every_attack_stays_in_the_ball(seed, eps):
    agent, q, obs = random_setting(seed)
    for name, x in all_attacks(agent, q, obs, eps).items():
        assert x.shape == obs.shape and x.dtype == obs.dtype, name
        assert not x.requires_grad, name
        if eps == 0:
            assert torch.equal(x, obs), name
        else:
            assert (x <= obs + eps).all() and (x >= obs - eps).all(), name
            assert (x != obs).any(), name  # and it does perturb


def test_negative_eps_is_refused():
    agent, q, obs = random_setting(0)
    for fn in (attacks.random, attacks.critic, attacks.mad):
        with pytest.raises(ValueError):
            fn(agent, obs, -0.1)


# every public function of attacks.py, found by inspection: a function added later is tested without being listed here
PUBLIC = sorted(name for name, f in vars(attacks).items() if inspect.isfunction(f) and f.__module__ == "attacks" and not name.startswith("_"))
RANDOM = [name for name in PUBLIC if "generator" in inspect.signature(getattr(attacks, name)).parameters]


def valid_calls():
    """{name: call(**keywords)}: a valid call of every public function of attacks.py, to which a test adds keywords."""
    agent, q, obs = random_setting(0)
    eps, actions, adversary_action = 0.1, torch.randn(len(obs), agent.actor_logstd.shape[1]), torch.randn_like(obs)
    logprob, advantages = agent.get_policy(obs).log_prob(actions).sum(1).detach(), torch.randn(len(obs))
    return {
        "project": lambda **kw: attacks.project(obs + 1, obs, eps, **kw),
        "random": lambda **kw: attacks.random(agent, obs, eps, **kw),
        "critic": lambda **kw: attacks.critic(agent, obs, eps, **kw),
        "mad": lambda **kw: attacks.mad(agent, obs, eps, **kw),
        "q_pgd": lambda **kw: attacks.q_pgd(agent, obs, eps, q, **kw),
        "pgd": lambda **kw: attacks.pgd(obs, eps, objective=lambda x: agent.get_value(x).sum(), **kw),
        "tanh_mlp_layers": lambda **kw: attacks.tanh_mlp_layers(agent.actor_mean, **kw),
        "mlp_input_grad": lambda **kw: attacks.mlp_input_grad(agent.actor_mean, obs, torch.ones_like, **kw),
        "gaussian_ppo_loss_grad": lambda **kw: attacks.gaussian_ppo_loss_grad(agent, actions, logprob, advantages, 0.2, **kw),
        "kl_divergence": lambda **kw: attacks.kl_divergence(agent, obs, obs + eps, **kw),
        "bounded_perturbation": lambda **kw: attacks.bounded_perturbation(obs, eps, adversary_action, **kw),
        "paad_actor": lambda **kw: attacks.paad_actor(agent, obs, eps, actions, **kw),
        "interval_bounds": lambda **kw: attacks.interval_bounds(agent.actor_mean, obs, eps, **kw),
        "crown_ibp_bounds": lambda **kw: attacks.crown_ibp_bounds(agent.actor_mean, obs, eps, **kw),
    }


@pytest.mark.parametrize("name", PUBLIC)
def test_a_misspelled_keyword_is_a_type_error(name):
    """No catch-all **kwargs swallows a typo (it would silently run the default), and what has a default is
    keyword-only, so that a positional argument cannot land in the wrong parameter."""
    calls = valid_calls()
    assert name in calls, f"attacks.{name} is new: add a valid call of it to valid_calls()"
    calls[name]()
    with pytest.raises(TypeError, match="unexpected keyword argument 'stpes'"):
        calls[name](stpes=5)
    for p in inspect.signature(getattr(attacks, name)).parameters.values():
        assert p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL), f"attacks.{name} has a catch-all *{p.name}"
        assert p.default is p.empty or p.kind == p.KEYWORD_ONLY, f"attacks.{name}: {p.name} has a default but is not keyword-only"


@pytest.mark.parametrize("name", PUBLIC)
def test_no_function_draws_from_the_global_generator_when_given_one(name):
    """A function that draws random numbers takes generator= and draws them all from it; any other draws none."""
    call = valid_calls()[name]
    state = torch.get_rng_state()
    call(**({"generator": torch.Generator().manual_seed(0)} if name in RANDOM else {}))
    assert torch.equal(torch.get_rng_state(), state), f"attacks.{name} drew from torch's global generator"


@pytest.mark.parametrize("name", RANDOM)
def test_a_generator_makes_the_draws_reproducible_whatever_the_global_seed(name):
    call = valid_calls()[name]
    torch.manual_seed(1)
    first = call(generator=torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    assert torch.equal(call(generator=torch.Generator().manual_seed(7)), first)
    assert not torch.equal(call(generator=torch.Generator().manual_seed(8)), first)  # the generator is what decides
    # without one the same numbers come, in the same order, from torch's global generator: seeded runs rely on it
    torch.manual_seed(7)
    assert torch.equal(call(), first)


def test_pgd_needs_exactly_one_gradient_source():
    agent, q, obs = random_setting(0)
    value = lambda x: agent.get_value(x).sum()
    for wrong in ({}, {"net": agent.critic}, {"head_grad": torch.ones_like}, {"objective": value, "net": agent.critic},
                  {"objective": value, "net": agent.critic, "head_grad": torch.ones_like}):
        with pytest.raises(TypeError, match="objective"):
            attacks.pgd(obs, 0.1, **wrong)


@pytest.mark.parametrize("seed", range(5))
def test_mad_raises_kl_and_critic_lowers_value_more_than_random(seed):
    agent, q, obs = random_setting(seed)
    obs = torch.randn(256, obs.shape[1])
    eps = 0.1
    torch.manual_seed(seed)
    x_rand = attacks.random(agent, obs, eps)
    kl_rand = attacks.kl_divergence(agent, obs, x_rand).mean()
    kl_mad = attacks.kl_divergence(agent, obs, attacks.mad(agent, obs, eps)).mean()
    assert kl_mad > 1.5 * kl_rand
    with torch.no_grad():
        v_rand = agent.get_value(x_rand).mean()
        v_critic = agent.get_value(attacks.critic(agent, obs, eps)).mean()
        q_rand = q(obs, agent.actor_mean(x_rand)).mean()
        q_attack = q(obs, agent.actor_mean(attacks.q_pgd(agent, obs, eps, q))).mean()
    assert v_critic < v_rand
    assert q_attack < q_rand


def test_robust_sarsa_reduces_td_loss():
    import evaluate

    torch.manual_seed(0)
    agent = Agent(11, 3)
    rms = {"mean": torch.zeros(11, dtype=torch.float64), "var": torch.ones(11, dtype=torch.float64), "count": 1.0}
    data = evaluate.collect_sarsa_data(agent, "Hopper-v5", rms, steps=2000, num_envs=4)
    s, a, r, s2, a2, term = data
    assert len(s) > 1500 and s.shape[1] == 11 and a.shape[1] == 3 and term.sum() > 0
    q_net, history = evaluate.train_robust_sarsa(agent, data, rs_eps=0.02, rs_reg=0.1, epochs=15, batch_size=64)
    assert history[-1] < 0.7 * history[0]  # TD loss over the whole data set: after training vs before
    assert not any(p.requires_grad for p in q_net.parameters())


def test_evaluate_all_attacks_table_json_and_rs_cache(tiny_spo_checkpoint, tmp_path):
    ckpt = tmp_path / "victim" / "agent.pt"  # a copy: the Robust Sarsa cache is written next to the checkpoint
    ckpt.parent.mkdir()
    shutil.copy(tiny_spo_checkpoint, ckpt)
    out = tmp_path / "eval.json"
    cmd = [ckpt, "--attacks", "all", "--num-episodes", "3", "--rs-steps", "600", "--rs-epochs", "2", "--output", out]
    proc = run_script("evaluate.py", *cmd)
    report = json.loads(out.read_text())
    means = {k: v["mean"] for k, v in report["results"].items()}
    assert set(means) == {"natural", "random", "critic", "mad", "rs"}
    assert report["results"]["rs"]["train_seconds"] > 0 and "train_seconds" not in report["results"]["mad"]
    assert report["epsilon"] == 0.075  # Hopper's default
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    # the evaluation's code, beside the training's (None outside a git checkout)
    assert report["code_commit"] in ((head, head + "+dirty") if head else (None,))
    assert report["worst_case"] == min(v for k, v in means.items() if k != "natural")  # over attacks only
    assert report["results"]["mad"]["variants_evaluated"] == 2 and report["results"]["mad"]["variant"] in ("beta=1", "beta=1e-05")
    assert report["robustness"] == pytest.approx((report["worst_case"] - means["natural"]) / means["natural"])
    for name in means:
        assert f"| {name}" in proc.stdout
    assert "worst case" in proc.stdout
    assert list(ckpt.parent.glob("rs_q_*.pt"))
    proc = run_script("evaluate.py", *cmd[:-2], "--attacks", "rs", "--output", tmp_path / "again.json")
    assert "reusing" in proc.stdout


def test_natural_only_evaluation_has_no_worst_case(tiny_spo_checkpoint, tmp_path):
    proc = run_script("evaluate.py", tiny_spo_checkpoint, "--num-episodes", "2", "--output", tmp_path / "n.json")
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["worst_case"] is None and report["robustness"] is None and "worst case" not in proc.stdout


def test_default_output_name_says_which_attacks_ran(tiny_spo_checkpoint, tmp_path):
    ckpt = tmp_path / "agent.pt"
    shutil.copy(tiny_spo_checkpoint, ckpt)
    run_script("evaluate.py", ckpt, "--num-episodes", "2", "--attacks", "critic,random", "--epsilon", "0.05")
    run_script("evaluate.py", ckpt, "--num-episodes", "2", "--epsilon", "0.05")
    written = sorted(p.name for p in tmp_path.glob("eval_*.json"))
    # no full-set name taken; the name lists the attacks in the canonical order, whatever order was typed
    assert written == ["eval_eps0.05_natural.json", "eval_eps0.05_random-critic.json"]
    assert set(json.loads((tmp_path / written[1]).read_text())["results"]) == {"natural", "random", "critic"}


def test_evaluate_bad_attack_and_bad_eps(tiny_spo_checkpoint):
    assert_one_line_error(refused("evaluate.py", tiny_spo_checkpoint, "--attacks", "fgsm"), "fgsm")
    assert_one_line_error(refused("evaluate.py", tiny_spo_checkpoint, "--epsilon", "-0.1"), "epsilon")
    assert_one_line_error(refused("evaluate.py", tiny_spo_checkpoint, "--mad-betas", "1,-1"), "mad-betas")


def test_capture_video_records_or_says_what_to_install(tiny_spo_checkpoint, tmp_path):
    videos = tmp_path / "videos"
    proc = run_script("evaluate.py", tiny_spo_checkpoint, "--num-episodes", "2", "--capture-video", "--video-episodes", "1",
                      "--video-frames", "5", "--video-size", "64", "--video-dir", videos, "--output", tmp_path / "v.json", check=False)
    if proc.returncode == 0:
        assert list(videos.glob("natural-ep0*.mp4"))
    else:
        assert_one_line_error(proc, "libosmesa6")


@pytest.mark.parametrize("seed", range(6))
def test_interval_bounds_contain_every_point_of_the_ball(seed):
    """IBP (attacks.interval_bounds): random Linear/Tanh nets of random widths and depths, random eps; the
    outputs at random points of the ball and at its corners lie inside [lower, upper]."""
    g = torch.Generator().manual_seed(seed)
    dims = [int(torch.randint(2, 17, (1,), generator=g)) for _ in range(int(torch.randint(2, 5, (1,), generator=g)))]
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.Tanh()] if i < len(dims) - 2 else [])
    net = torch.nn.Sequential(*layers)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=float(torch.rand(1, generator=g)) * 2 + 0.1, generator=g)
    obs = torch.randn(5, dims[0], generator=g)
    eps = float(torch.rand(1, generator=g)) * 0.5 + 0.01
    lower, upper = attacks.interval_bounds(net, obs, eps)
    assert lower.shape == upper.shape == (5, dims[-1]) and (lower <= upper).all()
    signs = torch.randint(0, 2, (200, 1, dims[0]), generator=g) * 2 - 1  # corners
    inside = 2 * torch.rand(200, 1, dims[0], generator=g) - 1
    with torch.no_grad():
        for offsets in (signs, inside):
            out = net(obs + eps * offsets)  # (200, 5, out)
            assert (out >= lower - 1e-5).all() and (out <= upper + 1e-5).all()
        # eps = 0: the bounds collapse onto the output; a larger eps only widens them
        l0, u0 = attacks.interval_bounds(net, obs, 0.0)
        assert torch.equal(l0, net(obs)) and torch.equal(u0, net(obs))
        l2, u2 = attacks.interval_bounds(net, obs, 2 * eps)
        assert (l2 <= lower + 1e-6).all() and (u2 >= upper - 1e-6).all() and (u2 - l2 > upper - lower).any()


def test_interval_bounds_are_differentiable_and_refuse_other_nets():
    agent = Agent(11, 3)
    obs = torch.randn(8, 11)
    lower, upper = attacks.interval_bounds(agent.actor_mean, obs, torch.full((8, 1), 0.1))  # a per-sample eps
    (upper - lower).sum().backward()
    assert agent.actor_mean[0].weight.grad is not None and agent.actor_mean[0].weight.grad.abs().sum() > 0
    with pytest.raises(TypeError):
        attacks.interval_bounds(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU()), torch.zeros(1, 3), 0.1)
    with pytest.raises(ValueError):
        attacks.interval_bounds(agent.actor_mean, obs, -0.1)
