"""sappo_ppo.py: reduction to SPO at kappa = 0 and at eps = 0, smoke runs (SGLD and convex) that save and evaluate,
the regulariser against the authors' SGLD and against brute force, bad input, the benchmark presets. (That a run of
another algorithm is not resumed is the renamed SPO line the alignment test of tests/test_robust.py pins.)"""
import json

import pytest
import torch
import torch.nn as nn

import attacks
from conftest import RUN, TINY, assert_one_line_error, read_scalars, refused, run_script
from sappo_ppo import sa_regulariser
from spo_ppo import Agent


def test_kappa0_or_eps0_repeats_the_whole_spo_run(spo_seed3_run, tmp_path):
    """kappa = 0 weighs the regulariser by zero, eps = 0 makes it zero (s' = s); the SGLD solver draws from its own
    generator, so either way the whole run (rollouts, every update, the final weights and normaliser) is spo_ppo.py's,
    bit for bit, for both methods. With eps > 0 and kappa > 0 the runs part."""
    tags = ["charts/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/entropy"]
    spo = read_scalars(str(spo_seed3_run))
    a = torch.load(spo_seed3_run / "agent.pt", weights_only=True)
    assert len(spo["losses/policy_loss"]) == 4 and len(spo["charts/episodic_return"]) >= 2
    for name, flags in [("k0", ["--kappa", "0"]), ("k0convex", ["--kappa", "0", "--method", "convex"]),
                        ("eps0", ["--epsilon", "0", "--kappa", "1"])]:
        run_script("sappo_ppo.py", *RUN, *flags, "--eps-warmup", "0", "--run-dir", tmp_path / name)
        rob = read_scalars(str(tmp_path / name))
        for tag in tags:
            assert rob[tag] == spo[tag], (name, tag)
        b = torch.load(tmp_path / name / "agent.pt", weights_only=True)
        for key, tensor in a["agent"].items():
            assert torch.equal(tensor, b["agent"][key]), (name, key)
        assert torch.equal(a["obs_rms"]["mean"], b["obs_rms"]["mean"]) and a["global_step"] == b["global_step"]
        if name == "k0":  # the regulariser was computed and is non-zero, only weighted by 0
            assert all(v > 0 for _, v in rob["adversary/regulariser"])
    run_script("sappo_ppo.py", *RUN, "--kappa", "1", "--eps-warmup", "0", "--run-dir", tmp_path / "k1")
    c = torch.load(tmp_path / "k1" / "agent.pt", weights_only=True)
    assert not torch.equal(c["agent"]["actor_mean.0.weight"], a["agent"]["actor_mean.0.weight"])


def test_smoke_run_ramps_epsilon_per_minibatch_saves_and_evaluates(tiny_run, tmp_path):
    run_dir, stdout = tiny_run("sappo_ppo.py")  # TINY
    assert "iter 2/2" in stdout and " R/random " in stdout
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["algo"] == "sappo"
    assert (ckpt["args"]["epsilon"], ckpt["args"]["kappa"], ckpt["args"]["method"]) == (0.075, 1.0, "sgld")  # Hopper defaults
    s = read_scalars(str(run_dir))
    # 2 iterations of M = 8 minibatches, ramp over 0.75 * 2 = 1.5 iterations; logged: the last minibatch (j = 7) of each
    assert [v for _, v in s["adversary/epsilon"]] == pytest.approx([0.075 * (7 / 8) / 1.5, 0.075])
    for tag in ["adversary/regulariser", "adversary/regulariser_random", "losses/policy_loss_clean", "losses/policy_loss"]:
        assert len(s[tag]) == 2
    # the logged policy loss is the clean PPO loss plus kappa (= 1) times the regulariser
    for (_, total), (_, clean), (_, reg) in zip(s["losses/policy_loss"], s["losses/policy_loss_clean"], s["adversary/regulariser"]):
        assert total == pytest.approx(clean + reg, rel=1e-5, abs=1e-7)
    out = tmp_path / "eval.json"
    run_script("evaluate.py", run_dir / "agent.pt", "--num-episodes", "2", "--attacks", "random", "--output", out)
    report = json.loads(out.read_text())
    assert report["algo"] == "sappo" and report["num_episodes"] == 2


def test_convex_variant_trains_with_its_kappa_and_bounds_above_noise(tmp_path):
    run_dir = tmp_path / "run"
    run_script("sappo_ppo.py", *TINY, "--method", "convex", "--eps-warmup", "0", "--run-dir", run_dir)
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["algo"] == "sappo" and (ckpt["args"]["method"], ckpt["args"]["kappa"]) == ("convex", 0.1)
    s = read_scalars(str(run_dir))
    # the IBP bound is an upper bound of the max over the ball, far above what uniform noise reaches
    for (_, bound), (_, noise) in zip(s["adversary/regulariser"], s["adversary/regulariser_random"]):
        assert bound > 10 * noise > 0


def random_actor(seed, n=64, obs_dim=11, act_dim=3, dtype=torch.float64):
    """An actor with non-trivial weights (a freshly initialised one is nearly constant) and a batch of states."""
    torch.manual_seed(seed)
    agent = Agent(obs_dim, act_dim).to(dtype)
    for p in agent.actor_mean.parameters():
        nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        agent.actor_logstd.copy_(0.3 * torch.randn(1, act_dim))
    return agent, torch.randn(n, obs_dim, dtype=dtype)


def authors_sgld_regulariser(agent, obs, eps, steps, beta, generator):
    """SA-PPO's get_state_kl_bound_sgld restated with autograd (huanzhang12/SA_PPO, src/policy_gradients/steps.py):
    the noise is added to the gradient of the minibatch *mean*; the draws are taken in attacks.mad's order."""
    mu_clean = agent.actor_mean(obs).detach()
    sigma = agent.actor_logstd.exp()
    step = eps / steps
    start_noise = torch.randn(obs.shape, generator=generator, dtype=obs.dtype) * (2 * step * beta) ** 0.5
    x = (obs + start_noise.sign() * step).detach()
    for i in range(steps):
        x.requires_grad_(True)
        diff = (agent.actor_mean(x) - mu_clean) / sigma.detach()
        (grad,) = torch.autograd.grad((diff * diff).sum(-1).mean(), x)
        noise = torch.randn(grad.shape, generator=generator, dtype=grad.dtype) * (2 * step * beta) ** 0.5 / (i + 2)
        x = torch.min(torch.max(x.detach() + (grad + noise).sign() * step, obs - eps), obs + eps)
    return (((agent.actor_mean(x) - mu_clean) / sigma) ** 2).sum(-1)


@pytest.mark.parametrize("seed", range(3))
def test_sgld_regulariser_is_the_authors_including_their_noise_scale(seed):
    agent, obs = random_actor(seed)
    eps, beta = 0.1, 1e-5
    expected = authors_sgld_regulariser(agent, obs, eps, 10, beta, torch.Generator().manual_seed(seed))
    got = sa_regulariser(agent, obs, eps, "sgld", 10, beta, generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    # beta in the authors' units matters: attacks.mad's own beta (noise relative to the sum) takes other steps
    obs_unscaled = attacks.mad(agent, obs, eps, beta=beta, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        unscaled = (((agent.actor_mean(obs_unscaled) - agent.actor_mean(obs)) / agent.actor_logstd.exp()) ** 2).sum(-1)
    assert not torch.allclose(unscaled, expected, rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_convex_bound_is_above_sgld_and_every_sampled_point_of_the_ball(seed):
    agent, obs = random_actor(seed, n=16)
    eps = 0.05
    with torch.no_grad():
        bound = sa_regulariser(agent, obs, eps, "convex")
        sgld = sa_regulariser(agent, obs, eps, "sgld", generator=torch.Generator().manual_seed(seed))
        mu, sigma = agent.actor_mean(obs), agent.actor_logstd.exp()
        # brute force: 2000 points per state, half of them corners of the ball
        u = 2 * torch.rand(2000, *obs.shape, dtype=obs.dtype) - 1
        u[1000:] = u[1000:].sign()
        sampled = (((agent.actor_mean(obs + eps * u) - mu) / sigma) ** 2).sum(-1).max(0).values
        random = 2 * attacks.kl_divergence(agent, obs, attacks.random(agent, obs, eps))
    assert (bound >= sampled).all() and (bound >= sgld).all()
    assert sgld.mean() > random.mean()  # the solver beats noise on a non-trivial actor
    assert (sa_regulariser(agent, obs, 0.0, "convex") == 0).all() and (sa_regulariser(agent, obs, 0.0, "sgld") == 0).all()


def test_tanh_lines_are_below_and_above_tanh_on_every_interval():
    """CROWN's lines for tanh hold on [l, u] for intervals left of, right of and across 0, wide and narrow, near
    saturation (where float rounding of the chord's slope once picked the wrong line) and beyond the table of tangent
    points; the looked-up tangent is close to the exact one (it touches within a grid step)."""
    torch.manual_seed(0)
    for scale in (0.1, 1.0, 3.0, 10.0):
        lo = torch.randn(4000, dtype=torch.float64) * scale
        hi = lo + torch.rand(4000, dtype=torch.float64) * scale
        kl, bl, ku, bu = attacks._tanh_relaxation(lo, hi)
        z = lo[:, None] + torch.linspace(0, 1, 101, dtype=torch.float64) * (hi - lo)[:, None]
        assert (kl[:, None] * z + bl[:, None] <= torch.tanh(z) + 1e-12).all()
        assert (torch.tanh(z) <= ku[:, None] * z + bu[:, None] + 1e-12).all()
    # float32 near saturation, and intervals across 0 reaching past the table of tangent points (+-20) on either side
    lo = torch.tensor([7.47, 6.246, -9.342, -0.5, -25.0, -0.5, -21.0]); hi = torch.tensor([7.55, 6.249, -8.985, 0.7, 0.5, 25.0, 3.0])
    kl, bl, ku, bu = attacks._tanh_relaxation(lo, hi)
    z = lo[:, None] + torch.linspace(0, 1, 101) * (hi - lo)[:, None]
    assert (kl[:, None] * z + bl[:, None] <= torch.tanh(z) + 1e-6).all() and (torch.tanh(z) <= ku[:, None] * z + bu[:, None] + 1e-6).all()
    # the exact upper tangent through (-1, tanh -1) touches at d with f(d) = 0; the table's line lies above it, barely
    k, b = attacks._tangent_line_through(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    z = torch.linspace(-1, 2, 301, dtype=torch.float64)
    gap = k * z + b - torch.tanh(z)
    assert gap.min() >= -1e-12 and gap.min() < 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_crown_ibp_bounds_hold_are_tighter_than_ibp_and_mix_into_the_regulariser(seed):
    agent, obs = random_actor(seed, n=16)
    for eps in (0.0, 0.05, 0.3):
        lower, upper = attacks.crown_ibp_bounds(agent.actor_mean, obs, eps)
        ibp_lower, ibp_upper = attacks.interval_bounds(agent.actor_mean, obs, eps)
        u = 2 * torch.rand(2000, *obs.shape, dtype=obs.dtype) - 1
        u[1000:] = u[1000:].sign()
        with torch.no_grad():
            y = agent.actor_mean(obs + eps * u)
        assert (lower <= y + 1e-9).all() and (y <= upper + 1e-9).all()
        if eps == 0:
            assert torch.allclose(lower, upper, atol=1e-9)
        else:  # on a trained-like actor at small eps, CROWN-IBP is the tighter (not guaranteed per entry in general)
            assert (upper - lower).mean() < (ibp_upper - ibp_lower).mean()
    # the regulariser: weight 1 is pure IBP, weight 0 pure CROWN-IBP, in between the mix; all differentiable
    r_ibp = sa_regulariser(agent, obs, 0.05, "convex")
    r_crown = sa_regulariser(agent, obs, 0.05, "convex", ibp_weight=0.0)
    r_mix = sa_regulariser(agent, obs, 0.05, "convex", ibp_weight=0.5)
    assert r_crown.mean() < r_mix.mean() < r_ibp.mean()
    (grad,) = torch.autograd.grad(r_mix.sum(), agent.actor_mean[2].weight)
    assert grad.abs().sum() > 0


def test_mixed_bounds_train_and_are_recorded(tmp_path):
    run_dir = tmp_path / "run"
    run_script("sappo_ppo.py", *TINY, "--method", "convex", "--convex-bound", "mixed", "--run-dir", run_dir)
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["args"]["convex_bound"] == "mixed"
    # early in the ramp the mixed bound is CROWN-IBP's, far below pure IBP's on the same states: compare with a run at ibp
    run_script("sappo_ppo.py", *TINY, "--method", "convex", "--run-dir", tmp_path / "ibp")
    mixed = [v for _, v in read_scalars(str(run_dir))["adversary/regulariser"]]
    ibp = [v for _, v in read_scalars(str(tmp_path / "ibp"))["adversary/regulariser"]]
    assert mixed[0] < ibp[0]


@pytest.mark.parametrize("method", ["sgld", "convex"])
def test_regulariser_gradient_raises_log_std_unless_detached(method):
    """sigma is not detached (the authors' robust_ppo_detach_stdev = false): d R / d log sigma_j = -2 sum_i (dmu_ij / sigma_j)^2,
    so minimising kappa * R pushes log sigma up; --detach-std cuts that path and keeps the one to the mean."""
    agent, obs = random_actor(0, n=16)
    reg = sa_regulariser(agent, obs, 0.05, method, generator=torch.Generator().manual_seed(0))
    grad_logstd, grad_w = torch.autograd.grad(reg.sum(), [agent.actor_logstd, agent.actor_mean[0].weight])
    assert torch.allclose(grad_logstd.sum(), -2 * reg.sum(), rtol=1e-9)
    assert (grad_logstd < 0).all() and grad_w.abs().sum() > 0
    reg = sa_regulariser(agent, obs, 0.05, method, detach_std=True, generator=torch.Generator().manual_seed(0))
    grad_logstd, grad_w = torch.autograd.grad(reg.sum(), [agent.actor_logstd, agent.actor_mean[0].weight], allow_unused=True)
    assert grad_logstd is None and grad_w.abs().sum() > 0


def test_bad_flags_are_one_line_errors(tmp_path):
    for flags, fragment in [(["--method", "crown"], "--method"), (["--convex-bound", "crown"], "--convex-bound"),
                            (["--convex-bound", "mixed"], "--method convex"), (["--kappa", "-1"], "--kappa"), (["--inner-beta", "-1"], "--inner-beta"),
                            (["--eps-warmup", "1.5"], "--eps-warmup"), (["--env-id", "Pendulum-v1", "--kappa", "1"], "--epsilon")]:
        proc = refused("sappo_ppo.py", *TINY, *flags, "--run-dir", tmp_path / "x")
        assert_one_line_error(proc, fragment)
    assert not (tmp_path / "x").exists()


def test_benchmark_presets_pass_the_scripts_per_env_defaults(tmp_path):
    import benchmark
    import sappo_ppo

    for algo, method in [("sappo", "sgld"), ("sappo_convex", "convex")]:
        assert benchmark.ALGOS[algo] == ("sappo_ppo.py", ["--method", method])
        assert set(benchmark.ALGO_ENV_FLAGS[algo]) == set(sappo_ppo.DEFAULT_EPSILON) == set(benchmark.ENV_FLAGS)
        for family, flags in benchmark.ALGO_ENV_FLAGS[algo].items():
            passed = {k: float(v) for k, v in zip(flags[::2], flags[1::2])}
            assert passed == {"--epsilon": sappo_ppo.DEFAULT_EPSILON[family], "--kappa": sappo_ppo.DEFAULT_KAPPA[method][family]}, (algo, family)
    out = run_script("benchmark.py", "run", "--algos", "sappo", "sappo_convex", "--envs", "Hopper-v5", "--seeds", "1",
                     "--root", tmp_path, "--results", tmp_path / "results", "--dry-run").stdout
    train = [line for line in out.splitlines() if "sappo_ppo.py" in line]
    assert len(train) == 2 and "--method sgld" in train[0] and "--kappa 1.0" in train[0] and "--kappa 0.1" in train[1]
    assert all("--learning-rate 3e-4" in line for line in train)
