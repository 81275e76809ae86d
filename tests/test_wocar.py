"""wocar_ppo.py: reduction to SPO, a tiny run that trains, saves, resumes and evaluates, bad flags, and the pieces:
the worst-action search, the worst-attack Q update (no gradient into the target, soft update), the kappa_w
schedules, SA-PPO's SGLD regulariser, and benchmark.py's per-env flags."""
import copy
import json
import shutil

import pytest
import torch
import torch.nn as nn

import attacks
from conftest import RUN, TINY, assert_one_line_error, read_scalars, refused, run_script
from wocar_ppo import Agent, layer_init, q_weight_at, sgld_regulariser, worst_action, worst_attack_q_update


@pytest.fixture
def tiny_wocar_run(tiny_run):
    return tiny_run("wocar_ppo.py")  # TINY with --save-every 1


def test_smoke_run_logs_saves_and_evaluates(tiny_wocar_run, tmp_path):
    run_dir, stdout = tiny_wocar_run
    assert "iter 2/2" in stdout and "Q drop search/random" in stdout
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    assert ckpt["algo"] == "wocar"
    assert {k: ckpt["args"][k] for k in ("epsilon", "kappa", "q_weight", "q_weight_schedule", "q_lr")} == {
        "epsilon": 0.075, "kappa": 0.1, "q_weight": 0.8, "q_weight_schedule": "linear", "q_lr": 4e-4}  # Hopper's
    assert set(ckpt["agent"]) == set(Agent(11, 3).state_dict())  # the agent is spo_ppo.py's; the Q networks ride beside it
    assert {"q_net", "q_target", "q_optimizer"} <= set(ckpt)
    s = read_scalars(str(run_dir))
    # epsilon of the last of the 8 minibatches of each update: 0.075 * min(1, (iteration - 1 + 7/8) / (0.75 * 2))
    assert [v for _, v in s["adversary/epsilon"]] == pytest.approx([0.075 * 7 / 12, 0.075])
    assert [v for _, v in s["wocar/q_weight"]] == pytest.approx([0.0, 0.4])  # linear: 0.8 * n / N, n = 0, 1 of N = 2
    for tag in ["wocar/q_loss", "wocar/q_drop_search", "wocar/q_drop_random", "adversary/regulariser", "losses/policy_loss_ppo"]:
        assert len(s[tag]) == 2, tag
    out = tmp_path / "eval.json"
    run_script("evaluate.py", run_dir / "agent.pt", "--num-episodes", "2", "--attacks", "random", "--output", out)
    assert json.loads(out.read_text())["algo"] == "wocar"


def test_resume_restores_the_q_networks(tiny_wocar_run, tmp_path):
    """Pretend the run stopped after iteration 1 with all-zero Q networks and a fresh Q optimiser: a tanh MLP with zero
    weights and biases gets zero weight gradients, so they stay exactly zero through the resumed iteration if, and only
    if, they were loaded (a fresh network's are not zero)."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_wocar_run[0], run_dir)
    ckpt = torch.load(run_dir / "agent.pt", weights_only=True)
    ckpt["iteration"], ckpt["global_step"] = 1, 64
    for name in ("q_net", "q_target"):
        ckpt[name] = {k: torch.zeros_like(v) for k, v in ckpt[name].items()}
    ckpt["q_optimizer"]["state"] = {}  # Adam's moments would move zero-gradient weights
    torch.save(ckpt, run_dir / "agent.pt")
    proc = run_script("wocar_ppo.py", *TINY, "--save-every", "1", "--run-dir", run_dir, "--resume")
    assert "resuming" in proc.stdout and "iter 2/2" in proc.stdout
    after = torch.load(run_dir / "agent.pt", weights_only=True)
    assert after["iteration"] == 2
    for name in ("q_net", "q_target"):
        assert not after[name]["0.weight"].any() and not after[name]["2.weight"].any(), name
    assert after["q_net"]["4.bias"].abs().sum() > 0  # the output bias did train: the Q step ran


def test_kappa0_qweight0_repeats_the_whole_spo_run(spo_seed3_run, tmp_path):
    """With kappa = 0 the regulariser vanishes and with q_weight = 0 the advantage is SPO's; the Q networks and the
    SGLD draw from streams of their own, so the whole run (rollouts, every update, final weights and normaliser) must
    be spo_ppo.py's, bit for bit, although the Q network trains."""
    tags = ["charts/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/entropy"]
    run_script("wocar_ppo.py", *RUN, "--kappa", "0", "--q-weight", "0", "--run-dir", tmp_path / "w0")
    spo, w0 = read_scalars(str(spo_seed3_run)), read_scalars(str(tmp_path / "w0"))
    assert len(spo["losses/policy_loss"]) == 4 and len(spo["charts/episodic_return"]) >= 2
    for tag in tags:
        assert w0[tag] == spo[tag], tag
    a, b = (torch.load(d / "agent.pt", weights_only=True) for d in (spo_seed3_run, tmp_path / "w0"))
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    assert torch.equal(a["obs_rms"]["mean"], b["obs_rms"]["mean"]) and a["global_step"] == b["global_step"]
    assert w0["wocar/q_loss"][-1][1] > 0
    # and each term alone parts the runs (the comparison can fail), as does the state importance weight of the regulariser
    actor = [a["agent"]["actor_mean.0.weight"]]
    for flags in (["--kappa", "0", "--q-weight", "0.8", "--q-weight-schedule", "constant"], ["--kappa", "1", "--q-weight", "0", "--eps-warmup", "0"],
                  ["--kappa", "1", "--q-weight", "0", "--eps-warmup", "0", "--state-importance"]):
        run_script("wocar_ppo.py", *RUN, *flags, "--run-dir", tmp_path / "w1")
        actor.append(torch.load(tmp_path / "w1" / "agent.pt", weights_only=True)["agent"]["actor_mean.0.weight"])
        assert not any(torch.equal(actor[-1], other) for other in actor[:-1]), flags
        shutil.rmtree(tmp_path / "w1")


@pytest.mark.parametrize("flags,fragment", [
    (["--q-weight", "-0.1"], "--q-weight"),
    (["--q-tau", "0"], "--q-tau"),
    (["--q-weight-schedule", "cubic"], "--q-weight-schedule"),
    (["--wq-steps", "0"], "--wq-steps"),
    (["--env-id", "Swimmer-v5"], "no default --epsilon"),
])
def test_bad_flags_are_one_line_errors(flags, fragment, tmp_path):
    proc = refused("wocar_ppo.py", *TINY, *flags, "--run-dir", tmp_path / "x")
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "x").exists()


def random_nets(seed, obs_dim=11, act_dim=3, std=0.5):
    """An actor with non-trivial weights (a fresh actor is nearly constant) and a critic-shaped Q on concat(s, a)."""
    torch.manual_seed(seed)
    agent = Agent(obs_dim, act_dim)
    for p in agent.actor_mean.parameters():
        nn.init.normal_(p, std=std)
    q_net = nn.Sequential(layer_init(nn.Linear(obs_dim + act_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                          layer_init(nn.Linear(64, 1), std=1.0))
    return agent, q_net, torch.randn(256, obs_dim)


def q_of(q_net, obs, a):
    with torch.no_grad():
        return q_net(torch.cat([obs, a], 1)).view(-1)


@pytest.mark.parametrize("seed", range(3))
def test_worst_action_stays_in_the_ibp_box_and_lowers_q(seed):
    """In the IBP box of the actor mean (wide for this random actor even at the authors' eps = 0.01) the search is a
    local one that returns its last iterate, like the authors': it must stay in the box and mostly lower Q."""
    agent, q_net, obs = random_nets(seed)
    with torch.no_grad():
        mu = agent.actor_mean(obs)
    for eps in (0.01, 0.3):
        low, high = attacks.interval_bounds(agent.actor_mean, obs, eps)
        a = worst_action(q_net, obs, mu, low, high, 50)
        a_max = worst_action(q_net, obs, mu, low, high, 50, maximise=True)
        for x in (a, a_max):
            assert not x.requires_grad and (x >= low).all() and (x <= high).all()
        q, q_max, q_mu = q_of(q_net, obs, a), q_of(q_net, obs, a_max), q_of(q_net, obs, mu)
        q_random = q_of(q_net, obs, low + (high - low) * torch.rand(mu.shape))
        assert (q < q_mu).float().mean() > 0.9 and (q < q_random).float().mean() > 0.8 and (q < q_max).all()


@pytest.mark.parametrize("seed", range(3))
def test_worst_action_reaches_the_lowest_corner_of_a_small_box(seed):
    """In a small box Q is nearly linear in a, so its minimum is the corner against grad_a Q's signs, and 50 steps of
    (u - l)/50 from the centre reach it; brute force over the 8 corners agrees."""
    _, q_net, obs = random_nets(seed)
    centre = torch.randn(len(obs), 3)
    low, high = centre - 0.01, centre + 0.01
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * 3)
    q_corners = torch.stack([q_of(q_net, obs, low + (high - low) * c) for c in corners], 1)
    assert torch.allclose(q_of(q_net, obs, worst_action(q_net, obs, centre, low, high, 50)), q_corners.min(1).values, atol=1e-6)
    assert torch.allclose(q_of(q_net, obs, worst_action(q_net, obs, centre, low, high, 50, maximise=True)), q_corners.max(1).values, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_worst_action_gradient_matches_autograd(seed):
    """One step in a box too wide to clip: the step is -step_size * sign(grad_a Q), with grad_a Q written by hand."""
    _, q_net, obs = random_nets(seed)
    a0 = torch.randn(len(obs), 3)
    x = a0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(q_net(torch.cat([obs, x], 1)).sum(), x)
    a1 = worst_action(q_net, obs, a0, a0 - 100, a0 + 100, steps=1)
    assert torch.equal(torch.sign(a0 - a1), grad.sign())


def test_q_update_target_has_no_gradient_and_is_soft_updated():
    agent, q_net, obs = random_nets(0)
    q_target = copy.deepcopy(q_net).requires_grad_(False)
    with torch.no_grad():  # let the target differ from the online net, as it does after some updates
        for p in q_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q_before, target_before = copy.deepcopy(q_net), copy.deepcopy(q_target)
    q_optimizer = torch.optim.SGD(q_net.parameters(), lr=1.0)  # so that the step reads back as the gradient
    n = len(obs)
    actions, rewards, next_obs = torch.randn(n, 3), torch.randn(n), torch.randn(n, 11)
    nonterminal = (torch.rand(n) > 0.2).float()
    gamma, eps, tau = 0.99, 0.05, 1e-3
    q_loss, a_worst = worst_attack_q_update(q_net, q_target, q_optimizer, agent.actor_mean, obs, actions, rewards, next_obs, nonterminal,
                                            gamma, eps, 50, tau)
    low, high = attacks.interval_bounds(agent.actor_mean, next_obs, eps)
    assert (a_worst >= low).all() and (a_worst <= high).all()
    assert all(p.grad is None for p in q_target.parameters())
    # the step taken is the gradient of mean (Q(s, a) - y)^2 with y = r + gamma (1 - done) Q_target(s', a_w) a constant
    y = rewards + gamma * nonterminal * q_of(target_before, next_obs, a_worst)
    expected_loss = ((q_before(torch.cat([obs, actions], 1)).view(-1) - y) ** 2).mean()
    expected = torch.autograd.grad(expected_loss, list(q_before.parameters()))
    assert q_loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    for g, p_before, p in zip(expected, q_before.parameters(), q_net.parameters()):
        assert torch.allclose(p_before - p, g, atol=1e-6)
    # and then Q_target <- (1 - tau) Q_target + tau Q, with the updated Q
    for p_target, p_target_before, p in zip(q_target.parameters(), target_before.parameters(), q_net.parameters()):
        assert torch.allclose(p_target, (1 - tau) * p_target_before + tau * p, atol=1e-7)
        assert not torch.equal(p_target, p_target_before)


def test_q_weight_schedules_are_the_authors():
    N = 976
    assert q_weight_at("linear", 0.8, 488, N) == pytest.approx(0.4)
    assert q_weight_at("exp", 0.8, N, N) == pytest.approx(0.512)  # Walker2d's: it ends at 0.8^3
    assert q_weight_at("exp", 0.8, 488, N) == pytest.approx(0.4**3)
    assert q_weight_at("constant", 0.5, 0, N) == 0.5
    assert [q_weight_at("stage", 0.8, n, N) for n in (487, 488)] == [0.0, 0.8]
    assert q_weight_at("stage-linear", 0.4, 244, N) == pytest.approx(0.2) and q_weight_at("stage-linear", 0.4, 600, N) == 0.4
    assert q_weight_at("constant", 3.0, 0, N) == 1.0  # capped at 1


@pytest.mark.parametrize("seed", range(3))
def test_sgld_regulariser(seed):
    agent, _, obs = random_nets(seed)
    obs = obs[:64]
    assert torch.equal(sgld_regulariser(agent, obs, 0.0), torch.zeros(64))
    r = sgld_regulariser(agent, obs, 0.1)
    x = attacks.random(agent, obs, 0.1)
    with torch.no_grad():
        r_random = (((agent.actor_mean(x) - agent.actor_mean(obs)) / agent.actor_logstd.exp()) ** 2).sum(1)
    assert r.mean() > 2 * r_random.mean()
    # sigma is not detached (the authors'): the regulariser pushes log sigma up; with detach_std it does not move it
    (g_std,) = torch.autograd.grad(r.mean(), agent.actor_logstd)
    assert (g_std < 0).all()
    r_detached = sgld_regulariser(agent, obs, 0.1, detach_std=True)
    assert r_detached.requires_grad and not torch.autograd.grad(r_detached.mean(), agent.actor_logstd, allow_unused=True)[0]


def test_benchmark_presets_pass_the_scripts_per_env_defaults(tmp_path):  # results in tmp: the repo's own runs would be skipped
    import benchmark
    import wocar_ppo

    assert set(benchmark.ALGO_ENV_FLAGS["wocar"]) == set(wocar_ppo.DEFAULT_EPSILON) == set(benchmark.ENV_FLAGS)
    for family, flags in benchmark.ALGO_ENV_FLAGS["wocar"].items():
        passed = {k[2:].replace("-", "_"): v if k == "--q-weight-schedule" else float(v) for k, v in zip(flags[::2], flags[1::2])}
        assert passed == {"epsilon": wocar_ppo.DEFAULT_EPSILON[family], **wocar_ppo.DEFAULT_WOCAR[family]}, family
    dry = run_script("benchmark.py", "run", "--algos", "wocar", "--envs", "Walker2d-v5", "--seeds", "1", "--preset", "quick",
                     "--root", tmp_path, "--results", tmp_path / "results", "--dry-run")
    assert "wocar_ppo.py" in dry.stdout and "--q-weight-schedule exp" in dry.stdout and "--learning-rate 4e-4" in dry.stdout
