"""Tests of isa_mdp.py: exact values, the strongest and the KL adversary, the preserved optimum, the
census, and a smoke run of the script. Whole file: well under 30 s on one core."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import isa_mdp

torch.set_num_threads(1)  # tiny problems: a second thread only adds overhead (and the other core is busy)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPE = torch.float64


def random_mdp(n_states, seed):
    rng = np.random.default_rng(seed)
    return isa_mdp.TabularMDP(
        P=torch.tensor(rng.dirichlet(np.ones(n_states), size=(n_states, 2)), dtype=DTYPE),
        R=torch.tensor(rng.uniform(-1, 1, size=(n_states, 2)), dtype=DTYPE),
        mu=torch.tensor(rng.dirichlet(np.ones(n_states)), dtype=DTYPE),
        gamma=0.9,
        state_names=tuple(f"s{i}" for i in range(n_states)),
    )


def monte_carlo_values(mdp, theta, nu, episodes, horizon, seed):
    """Discounted returns of π∘ν from every start state, truncated at `horizon`; returns (mean, std err)."""
    rng = np.random.default_rng(seed)
    P, R, gamma = mdp.P.numpy(), mdp.R.numpy(), mdp.gamma
    p_go = 1.0 / (1.0 + np.exp(-np.asarray(theta)))
    n = P.shape[0]
    means, errors = [], []
    for s0 in range(n):
        state = np.full(episodes, s0)
        ret = np.zeros(episodes)
        for t in range(horizon):
            shown = np.asarray(nu)[state]  # the agent sees ν(s) ...
            action = (rng.random(episodes) < p_go[shown]).astype(int)
            ret += gamma**t * R[state, action]  # ... but the reward and the move use the true s
            cum = np.cumsum(P[state, action], axis=1)
            state = (rng.random((episodes, 1)) > cum).sum(axis=1).clip(max=n - 1)
        means.append(ret.mean())
        errors.append(ret.std(ddof=1) / np.sqrt(episodes))
    return np.array(means), np.array(errors)


@pytest.mark.parametrize("nu", [(0, 1), (1, 0)])
def test_values_match_monte_carlo(nu):
    mdp = isa_mdp.make_commit_mdp()
    theta = [0.3, -0.5]
    exact = isa_mdp.values_under(torch.tensor([theta], dtype=DTYPE), mdp, torch.tensor(nu))[0].numpy()
    horizon = 150
    # truncation bias: the rewards after the horizon sum to at most γ^H · max|r| / (1 − γ) (≈ 3e-6 here)
    bias = mdp.gamma**horizon * float(mdp.R.abs().max()) / (1 - mdp.gamma)
    mc, stderr = monte_carlo_values(mdp, theta, nu, episodes=20000, horizon=horizon, seed=1)
    # 4.5 standard errors: a false alarm has probability < 1e-5 per state; the tolerance is ~0.2 on V ≈ 5-15
    assert np.all(np.abs(mc - exact) <= 4.5 * stderr + bias), (mc, exact, stderr)
    assert np.all(stderr < 0.1)  # the tolerance is tight enough to catch a wrong value


def test_worst_case_below_every_adversary_and_matches_policy_iteration():
    mdp = random_mdp(3, seed=3)
    eps_sets = [[0, 1], [0, 1, 2], [1, 2]]
    adversaries = isa_mdp.all_adversaries(eps_sets)
    assert len(adversaries) == 2 * 3 * 2
    theta = torch.tensor(np.random.default_rng(4).uniform(-3, 3, size=(30, 3)), dtype=DTYPE)
    worst, _ = isa_mdp.worst_case_values(theta, mdp, adversaries)
    for nu in adversaries:  # the minimising adversary is at least as strong in EVERY state
        assert torch.all(worst <= isa_mdp.values_under(theta, mdp, nu) + 1e-10)
    assert torch.all(worst <= isa_mdp.natural_values(theta, mdp) + 1e-10)
    # and somewhere strictly below the natural value (the adversary does something)
    assert float((isa_mdp.natural_values(theta, mdp) - worst).max()) > 1e-3
    for b in range(0, 30, 5):
        V_pi, _ = isa_mdp.worst_case_by_policy_iteration(theta[b], mdp, eps_sets)
        assert np.allclose(V_pi, worst[b].numpy(), atol=1e-10)


def test_kl_adversary_shows_the_other_state_unless_rows_agree():
    eps_sets = [[0, 1], [0, 1]]
    theta = torch.tensor([[1.0, -2.0], [0.7, 0.7], [40.0, 40.0]], dtype=DTYPE)
    nu = isa_mdp.kl_adversary(theta, eps_sets)
    assert nu[0].tolist() == [1, 0]  # rows differ: the KL is largest at the other state
    assert nu[1].tolist() == [0, 1]  # rows agree: every KL is 0, ties go to the true state
    assert nu[2].tolist() == [0, 1]
    # with no budget the adversary can only show the true state
    assert isa_mdp.kl_adversary(theta, [[0], [1]]).tolist() == [[0, 1]] * 3


def test_optimum_is_preserved_by_all_three_objectives():
    mdp = isa_mdp.make_commit_mdp()
    eps_sets = [[0, 1], [0, 1]]
    adversaries = isa_mdp.all_adversaries(eps_sets)
    V_star, actions, _ = isa_mdp.optimal_policy(mdp)
    assert actions == (1, 1)  # "go" is optimal in both confusable states: the ISA property
    assert abs(float(V_star @ mdp.mu) - 19.0) < 1e-9  # hand-computed: ½·18 + ½·20
    optimum = torch.tensor([[40.0, 40.0]], dtype=DTYPE)
    values = [float(isa_mdp.objective(optimum, k, mdp, adversaries, eps_sets)[0]) for k in isa_mdp.OBJECTIVES]
    assert np.allclose(values, 19.0, atol=1e-9)
    # no objective exceeds V* anywhere, so the optimum stays the global maximum of each landscape
    axis = torch.linspace(-10, 10, 41, dtype=DTYPE)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    for kind in isa_mdp.OBJECTIVES:
        assert float(isa_mdp.objective(grid, kind, mdp, adversaries, eps_sets).max()) <= 19.0 + 1e-9
    # whereas an asymmetric policy is good but fragile: ARPO's value is far below SPO's
    fragile = torch.tensor([[-6.0, 6.0]], dtype=DTYPE)
    spo, arpo = (float(isa_mdp.objective(fragile, k, mdp, adversaries, eps_sets)[0]) for k in ("spo", "arpo"))
    assert spo - arpo > 10.0


def test_autograd_gradient_matches_finite_differences():
    mdp = isa_mdp.make_commit_mdp()
    eps_sets = [[0, 1], [0, 1]]
    adversaries = isa_mdp.all_adversaries(eps_sets)
    theta = torch.tensor([[0.4, -1.3]], dtype=DTYPE)
    for kind in isa_mdp.OBJECTIVES:  # away from kinks all three are smooth
        th = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(isa_mdp.objective(th, kind, mdp, adversaries, eps_sets).sum(), th)
        h = 1e-6
        fd = []
        for i in range(2):
            e = torch.zeros_like(theta)
            e[0, i] = h
            plus = isa_mdp.objective(theta + e, kind, mdp, adversaries, eps_sets)
            minus = isa_mdp.objective(theta - e, kind, mdp, adversaries, eps_sets)
            fd.append(float((plus - minus)[0]) / (2 * h))
        assert np.allclose(grad[0].numpy(), fd, rtol=1e-6, atol=1e-7), (kind, grad, fd)


def test_census_is_deterministic_and_finds_the_arpo_trap():
    mdp = isa_mdp.make_commit_mdp()
    eps_sets = [[0, 1], [0, 1]]
    args = isa_mdp.Args(grid_size=6, lr=1.0)  # a coarse, fast census: 36 starts, 500 steps
    first, V_star, _ = isa_mdp.run_census(args, mdp, eps_sets, grid_size=6, steps=500, verbose=False)
    second, _, _ = isa_mdp.run_census(args, mdp, eps_sets, grid_size=6, steps=500, verbose=False)
    for kind in isa_mdp.OBJECTIVES:
        assert torch.equal(first[kind]["paths"], second[kind]["paths"])
        assert torch.equal(first[kind]["labels"], second[kind]["labels"])
        assert first[kind]["rows"] == second[kind]["rows"]
    shares = {k: isa_mdp.deceptive_share(first[k]) for k in isa_mdp.OBJECTIVES}
    assert shares["arpo"] >= 0.2 and shares["spo"] == 0.0 and shares["barpo"] == 0.0, shares
    trap = [r for r in first["arpo"]["rows"] if r["kind"] == "deceptive"][0]
    assert max(trap["p_go"]) < 0.01 and abs(trap["worst"] - 9.0) < 0.05  # "wait everywhere", value 9 < 19


def test_isa_check_and_eps_set_parsing():
    mdp = isa_mdp.make_commit_mdp()
    assert isa_mdp.check_isa(mdp, [[0, 1], [0, 1]])[0]
    bad = isa_mdp.make_commit_mdp()
    bad.R[0, 1] = -50.0  # now "go" is terrible in base: the optimal actions differ across the confusable set
    assert not isa_mdp.check_isa(bad, [[0, 1], [0, 1]])[0]
    assert isa_mdp.check_isa(bad, [[0], [1]])[0]  # with no confusion it is trivially ISA
    assert isa_mdp.parse_eps_sets("01,1", 2) == [[0, 1], [1]]
    for text in ("1,01", "01", "01,0x", "02,01", "01,,"):
        with pytest.raises(SystemExit, match="error:"):
            isa_mdp.parse_eps_sets(text, 2)


def run_script(*flags, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "isa_mdp.py"), *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_script_smoke_run_writes_pngs(tmp_path):
    out = tmp_path / "figs"
    result = run_script("--grid-size", "4", "--steps", "300", "--plot-res", "21", "--out-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| objective | limit | kind |" in result.stdout
    assert "Paper's claim reproduced" in result.stdout
    for name in ("landscapes", "gap", "basins", "diagonal"):
        png = out / f"isa_mdp_{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_rejects_bad_input(tmp_path):
    result = run_script("--grid-size", "-3", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["error: --grid-size must be at least 2, got -3"]
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("field, value", [("grid_size", 1), ("steps", 0), ("lr", -0.1), ("kappa", -1.0),
                                          ("grid_range", 0.0), ("cluster_tol", 1.5)])
def test_check_args_rejects_each_bad_value(field, value):
    isa_mdp.check_args(isa_mdp.Args())  # the defaults are fine
    with pytest.raises(SystemExit, match="^error: "):
        isa_mdp.check_args(isa_mdp.Args(**{field: value}))
