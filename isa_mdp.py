"""The toy ISA-MDP: exact SPO / ARPO / BARPO landscapes and a census of where gradient ascent ends.

What this script shows
----------------------
The paper's central argument is geometric. Training against the *strongest* adversary (ARPO) reshapes
the policy landscape: it creates valleys of robust but poor stationary policies ("deceptive FOSPs") in
which gradient ascent gets stuck, while the milder KL adversary of BARPO keeps the global optimum and
keeps the landscape navigable. Here everything is computed exactly (no sampling) on a 2-state,
2-action MDP whose policy has 2 parameters, so the landscapes can be drawn and every start counted.

The MDP ("commit", our construction)
------------------------------------
States: base (0) and run (1). Actions: wait (0) and go (1). Discount γ = 0.9, start μ = (½, ½).

    base, wait : reward +1, stay in base          base, go : reward  0, move to run
    run,  go   : reward +2, stay in run           run, wait : reward −1, fall back to base

The optimal policy is "go" in both states (V*(μ) = 19); "wait" everywhere is safe but poor (V(μ) = 9).
The adversary's budget: at either state it may show the agent the *other* state (B(base) = B(run) =
{base, run}), so the two observations are confusable. Because "go" is optimal in both, the optimal
policy is also the optimal robust policy: the adversary cannot change the intrinsic state (ISA property).

Policy: π_θ(go | s) = sigmoid(θ_s), θ = (θ_base, θ_run) ∈ R² (a 2-action softmax with logits (0, θ_s)).
An adversary ν maps each true state s to a shown state ν(s) ∈ B(s); under attack the agent acts with
π(·|ν(s)) while the environment moves on the true s, which is the policy π∘ν.

The three objectives (all exact; V is a linear solve V = (I − γ P_π)⁻¹ r_π)
----------------------------------------------------------------------------
    SPO   : J(θ) = μ·V^{π_θ}
    ARPO  : J(θ) = min_ν μ·V^{π_θ∘ν}        (strongest adversary, by enumerating all deterministic ν;
                                            checked against policy iteration on the adversary's MDP)
    BARPO : J(θ) = μ·V^{π_θ∘ν◇}  with  ν◇(s) = argmax_{s'∈B(s)} KL(π_θ(·|s) ‖ π_θ(·|s'))
            ν◇ is held fixed when differentiating (no gradient through the argmax), as in barpo_ppo.py.
    --kappa κ > 0 adds SPO guidance κ·μ·V^{π_θ} to both robust objectives (κ = 0 is the pure form).

The min over adversaries is piecewise smooth; its gradient is taken under the currently minimising
adversary (a subgradient), which is what an ARPO learner with an exact inner solver follows.

Pseudocode of the census
------------------------
    for every start θ₀ on a uniform grid in [−r, r]²:  θ ← θ₀;  repeat steps times: θ ← θ + lr·∇J(θ)
    cluster the limits by their policy π(go|·) (to --cluster-tol); for every cluster report θ, the
    natural value, the worst-case value and the share of starts; check that it is a local maximum of
    its objective over the policy square (else: "not a FOSP yet", a slow plateau); call a FOSP
    *deceptive* if both its natural and worst-case values are more than --deceptive-margin × (value
    range) below V* while its gap V^π − V^{π∘ν*} is below that margin (robust but poor).

Why the ARPO valley exists (the property the construction is built on)
----------------------------------------------------------------------
"go" only pays if it is taken in *both* states: a partial commitment is exploitable. SPO escapes the
safe policy asymmetrically: first it learns "go" in run (where it beats falling back with −1), after
which "go" in base becomes good too. Under the strongest adversary every asymmetric step is punished:
once π(go|run) > π(go|base), the adversary shows "run" at base (the agent leaves base more often) and
"base" at run (the agent then waits and falls back with −1). The only moves the adversary cannot
exploit are symmetric ones (θ_base = θ_run), and along that diagonal the value first *drops* before it
rises to the optimum. So "wait everywhere" (gap V^π − V^{π∘ν*} = 0, perfectly robust, value 9 instead
of 19) is a local maximum of the ARPO objective over the policy square, with a large basin; in the
softmax parameters it lies at infinity, θ → (−∞, −∞), where the gradient vanishes. The KL adversary
ignores values: it always shows the other state (that maximises the KL whenever the two rows differ).
That is a fixed relabelling, so BARPO's landscape is SPO's mirrored in the diagonal: a full tabular
softmax landscape, on which exact policy gradient reaches a global optimum (Agarwal et al., 2021).
At the optimum both rows agree, the KL is 0, and all three objectives coincide.

What we measured (default run; numbers in docs/isa_mdp.md)
----------------------------------------------------------
ARPO sends about 41 % of the 21² starts in [−4, 4]² to "wait everywhere" (the paper reports about 1/3
for its own toy); SPO and BARPO send none. The share grows with the start box (13 % for [−1, 1]²,
30 % for [−2, 2]², 45 % for [−6, 6]²). Two honest caveats:
  * SPO guidance (--kappa > 0) brings the trap back into BARPO on this MDP (κ = 0.1: 26 %, κ = 1: 31 %):
    near "wait everywhere" the guidance term κ·∇V^π pulls θ_base down harder than the swapped BARPO term
    pushes it up. κ = 0 (the pure bilevel objective, the paper's "BARPO w/o guidance") is the default.
  * BARPO without guidance has its own failure mode: under the swap adversary θ_s only ever acts in the
    *other* state, so if the action barely matters there, θ_s is never learned, and the clean policy
    can be poor (a flat direction, not a valley). `--search` finds it in random MDPs; guidance removes it.

Our reconstruction (the paper gives neither its toy MDP nor its grid): the MDP, the start grid, the
step size and number of steps, the clustering tolerance and the "deceptive" threshold are our choices,
exposed as flags. `--search` runs the census on random 2-state ISA-MDPs (Dirichlet transitions, rewards
uniform in [−1, 1]) to show how common each phenomenon is; the default MDP was built by hand first and
showed the effect, so it was kept.

Flags that matter: --grid-size, --grid-range, --steps, --lr, --kappa, --eps-sets, --out-dir, --search.
Run: python isa_mdp.py            (about 20 s on one core; writes 4 PNGs to docs/figures/)
"""
import itertools
import os
import time
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

DTYPE = torch.float64
OBJECTIVES = ("spo", "arpo", "barpo")


@dataclass
class Args:
    grid_size: int = 21
    """number of starting points per parameter axis (grid_size² starts in total)"""
    grid_range: float = 4.0
    """starting parameters lie on a uniform grid in [-grid_range, grid_range]²"""
    steps: int = 5000
    """gradient-ascent steps per start"""
    lr: float = 0.2
    """gradient-ascent step size (on μ·V, in reward units)"""
    kappa: float = 0.0
    """SPO guidance: add kappa·μ·V^π to the ARPO and BARPO objectives (0 = pure ARPO / BARPO)"""
    eps_sets: str = "01,01"
    """the adversary's budget B(s), one entry per state, comma-separated: '01,01' = both confusable"""
    cluster_tol: float = 0.05
    """limits whose action probabilities differ by at most this (max-norm) are one FOSP"""
    deceptive_margin: float = 0.1
    """a FOSP is 'deceptive' if its values are this fraction of the value range below V*"""
    out_dir: str = "docs/figures"
    """directory for the PNG figures"""
    plots: bool = True
    """write the figures (--no-plots skips them)"""
    plot_res: int = 161
    """landscape resolution per axis in the figures"""
    plot_range: float = 8.0
    """the figures show parameters in [-plot_range, plot_range]²"""
    traj_stride: int = 3
    """draw the trajectory of every traj_stride-th start per axis"""
    search: bool = False
    """instead of the census, search random 2-state ISA-MDPs for deceptive ARPO basins"""
    search_trials: int = 100
    """number of random MDPs tried by --search"""
    search_grid_size: int = 9
    """starts per axis in each --search census"""
    search_steps: int = 1500
    """gradient-ascent steps per start in each --search census"""
    seed: int = 0
    """random seed of --search (the census itself is deterministic)"""


@dataclass
class TabularMDP:
    P: torch.Tensor
    """transition probabilities P[s, a, s'], shape (n, 2, n)"""
    R: torch.Tensor
    """expected rewards R[s, a], shape (n, 2)"""
    mu: torch.Tensor
    """initial-state distribution, shape (n,)"""
    gamma: float
    """discount factor"""
    state_names: tuple
    """names of the states, for printing and plots"""
    action_names: tuple = ("wait", "go")
    """names of the two actions"""


def make_commit_mdp():
    """The default MDP described in the module docstring."""
    base, run, wait, go = 0, 1, 0, 1
    P = torch.zeros(2, 2, 2, dtype=DTYPE)
    R = torch.zeros(2, 2, dtype=DTYPE)
    P[base, wait, base], R[base, wait] = 1.0, 1.0  # safe: stay and collect +1
    P[base, go, run], R[base, go] = 1.0, 0.0  # commit: move to run, nothing yet
    P[run, go, run], R[run, go] = 1.0, 2.0  # committed: +2 every step
    P[run, wait, base], R[run, wait] = 1.0, -1.0  # give up: pay 1 and fall back
    mu = torch.tensor([0.5, 0.5], dtype=DTYPE)
    return TabularMDP(P=P, R=R, mu=mu, gamma=0.9, state_names=("base", "run"))


def parse_eps_sets(text, n_states):
    """'01,01' -> [[0, 1], [0, 1]]: the states the adversary may show at each true state."""
    entries = text.split(",")
    if len(entries) != n_states:
        raise SystemExit(f"error: --eps-sets needs {n_states} comma-separated entries, got {text!r}")
    sets = []
    for s, entry in enumerate(entries):
        if entry == "" or not all(c in "0123456789" for c in entry):
            raise SystemExit(f"error: --eps-sets entry {entry!r} for state {s} must be a string of state digits")
        allowed = sorted(set(int(c) for c in entry))
        if any(c >= n_states for c in allowed):
            raise SystemExit(f"error: --eps-sets entry {entry!r} names a state >= {n_states}")
        if s not in allowed:
            raise SystemExit(f"error: --eps-sets entry {entry!r} must contain state {s} itself"
                             " (showing the true state is always allowed)")
        sets.append(allowed)
    return sets


def check_args(args):
    if args.grid_size < 2:
        raise SystemExit(f"error: --grid-size must be at least 2, got {args.grid_size}")
    if args.steps < 1:
        raise SystemExit(f"error: --steps must be positive, got {args.steps}")
    if not args.grid_range > 0 or not args.plot_range > 0:
        raise SystemExit("error: --grid-range and --plot-range must be positive")
    if not args.lr > 0:
        raise SystemExit(f"error: --lr must be positive, got {args.lr}")
    if args.kappa < 0:
        raise SystemExit(f"error: --kappa must be non-negative, got {args.kappa}")
    if not 0 < args.cluster_tol < 1 or not 0 < args.deceptive_margin < 1:
        raise SystemExit("error: --cluster-tol and --deceptive-margin must lie in (0, 1)")
    if args.plot_res < 2 or args.traj_stride < 1:
        raise SystemExit("error: --plot-res must be at least 2 and --traj-stride at least 1")
    if args.search_trials < 1 or args.search_grid_size < 2 or args.search_steps < 1:
        raise SystemExit("error: --search-trials and --search-steps must be positive, --search-grid-size at least 2")


# ----------------------------------------------------------------------------------------------------
# Exact values
# ----------------------------------------------------------------------------------------------------
def policy_probs(theta):
    """π(a|s) for a batch of parameters theta (B, n) -> (B, n, 2), with π(go|s) = sigmoid(θ_s)."""
    p_go = torch.sigmoid(theta)
    return torch.stack([1.0 - p_go, p_go], dim=-1)


def policy_log_probs(theta):
    """log π(a|s), computed stably for large |θ| -> (B, n, 2)."""
    return torch.stack([torch.nn.functional.logsigmoid(-theta), torch.nn.functional.logsigmoid(theta)], dim=-1)


def values_under(theta, mdp, nu):
    """V^{π∘ν}(s) for every true state s: the agent acts with π(·|ν(s)), the MDP moves on s.

    theta: (B, n); nu: (n,) one adversary for the whole batch, or (B, n) one per batch entry.
    Returns (B, n), the exact solution of the Bellman linear system (I − γ P_{π∘ν}) V = r_{π∘ν}.
    """
    batch, n = theta.shape
    pi = policy_probs(theta)  # (B, n, 2): action probabilities for every observation
    if nu.dim() == 1:
        nu = nu.expand(batch, n)
    pi_shown = torch.gather(pi, 1, nu.unsqueeze(-1).expand(batch, n, 2))  # pi_shown[b, s] = π(·|ν(s))
    P_nu = torch.einsum("bsa,sat->bst", pi_shown, mdp.P)  # state-to-state transitions under π∘ν
    r_nu = torch.einsum("bsa,sa->bs", pi_shown, mdp.R)  # expected one-step reward under π∘ν
    eye = torch.eye(n, dtype=theta.dtype)
    return torch.linalg.solve(eye - mdp.gamma * P_nu, r_nu)


def natural_values(theta, mdp):
    """V^π: no adversary (ν = identity)."""
    identity = torch.arange(theta.shape[1])
    return values_under(theta, mdp, identity)


def all_adversaries(eps_sets):
    """Every deterministic adversary ν with ν(s) ∈ B(s), as a (K, n) integer tensor (identity first)."""
    return torch.tensor(list(itertools.product(*eps_sets)), dtype=torch.long)


def worst_case_values(theta, mdp, adversaries):
    """V^{π∘ν*}: the strongest adversary, by enumerating every deterministic ν.

    Returns (V (B, n) under the minimising adversary, its index (B,)). Gradients flow through the values
    of the chosen adversary only: the subgradient of the min.
    """
    V_all = torch.stack([values_under(theta, mdp, nu) for nu in adversaries], dim=1)  # (B, K, n)
    J_all = V_all @ mdp.mu  # (B, K)
    best = J_all.detach().argmin(dim=1)  # ties -> the first (lowest-index) adversary
    return V_all[torch.arange(theta.shape[0]), best], best


def kl_adversary(theta, eps_sets):
    """BARPO's inner adversary: ν◇(s) = argmax_{s' ∈ B(s)} KL(π(·|s) ‖ π(·|s')), detached.

    Ties (in particular when all rows in B(s) agree and every KL is 0) are broken towards s' = s.
    """
    with torch.no_grad():
        pi, log_pi = policy_probs(theta), policy_log_probs(theta)
        batch, n = theta.shape
        nu = torch.arange(n).expand(batch, n).clone()
        for s in range(n):
            best_kl = torch.zeros(batch, dtype=theta.dtype)  # KL(π(·|s) ‖ π(·|s)) = 0
            for s_shown in eps_sets[s]:
                kl = (pi[:, s] * (log_pi[:, s] - log_pi[:, s_shown])).sum(-1)
                better = kl > best_kl
                nu[better, s] = s_shown
                best_kl = torch.where(better, kl, best_kl)
    return nu


def objective(theta, kind, mdp, adversaries, eps_sets, kappa=0.0):
    """The scalar objective J(θ) per batch entry (B,) for kind in {'spo', 'arpo', 'barpo'}."""
    if kind == "spo":
        return natural_values(theta, mdp) @ mdp.mu
    if kind == "arpo":  # ARPO: the strongest adversary
        robust = worst_case_values(theta, mdp, adversaries)[0] @ mdp.mu
    elif kind == "barpo":  # BARPO: the KL adversary, held fixed when differentiating
        robust = values_under(theta, mdp, kl_adversary(theta, eps_sets)) @ mdp.mu
    else:
        raise ValueError(f"unknown objective {kind!r}")
    if kappa > 0:  # SPO guidance
        robust = robust + kappa * (natural_values(theta, mdp) @ mdp.mu)
    return robust


def worst_case_by_policy_iteration(theta, mdp, eps_sets):
    """V^{π∘ν*} for ONE parameter vector theta (n,), by policy iteration on the adversary's MDP.

    The adversary's MDP has the same states; its action at s is the state s' ∈ B(s) it shows, after
    which the agent draws a ~ π(·|s') and the true MDP moves on (s, a). The adversary minimises value.
    Used to check the enumeration in worst_case_values.
    """
    theta = torch.as_tensor(theta, dtype=DTYPE).reshape(1, -1)
    pi = policy_probs(theta)[0].numpy()
    P, R, gamma = mdp.P.numpy(), mdp.R.numpy(), mdp.gamma
    n = theta.shape[1]
    nu = list(range(n))
    while True:
        V = values_under(theta, mdp, torch.tensor(nu))[0].numpy()
        q = R + gamma * P @ V  # q[s, a]: value of action a taken at true state s, then following π∘ν
        new_nu = []
        for s in range(n):
            cost = {s_shown: pi[s_shown] @ q[s] for s_shown in eps_sets[s]}
            best = min(cost, key=cost.get)
            new_nu.append(best if cost[best] < cost[nu[s]] - 1e-12 else nu[s])  # switch only if strictly better
        if new_nu == nu:
            return V, nu
        nu = new_nu


def deterministic_values(mdp):
    """{actions: V (n,)} for all 2^n deterministic policies (θ = ±40: deterministic up to e^-40)."""
    n = mdp.P.shape[0]
    values = {}
    for actions in itertools.product([0, 1], repeat=n):
        theta = torch.tensor([[40.0 if a == 1 else -40.0 for a in actions]], dtype=DTYPE)
        values[actions] = natural_values(theta, mdp)[0]
    return values


def optimal_policy(mdp):
    """V*, the optimal action per state and Q*(s, a), by enumerating the deterministic policies.

    With μ of full support the policy maximising μ·V is optimal in every state (an optimal deterministic
    policy exists and dominates all others state by state)."""
    values = deterministic_values(mdp)
    best_actions = max(values, key=lambda acts: float(values[acts] @ mdp.mu))
    best_V = values[best_actions]
    q = mdp.R + mdp.gamma * mdp.P @ best_V  # Q*(s, a)
    return best_V, best_actions, q


def value_range(mdp):
    """V*(μ) minus the worst deterministic policy's V(μ): the scale for 'clearly below the optimum'."""
    values = [float(V @ mdp.mu) for V in deterministic_values(mdp).values()]
    return max(values) - min(values)


def check_isa(mdp, eps_sets):
    """ISA property: the optimal action is the same (and strictly optimal) across every B(s)."""
    _, actions, q = optimal_policy(mdp)
    for s, allowed in enumerate(eps_sets):
        for s_shown in allowed:
            gap = abs(float(q[s_shown, 1] - q[s_shown, 0]))
            if actions[s_shown] != actions[s] or gap < 1e-6:
                return False, f"state {s} may be shown as {s_shown}, but their optimal actions differ (or tie)"
    return True, "ok"


# ----------------------------------------------------------------------------------------------------
# Gradient ascent and the census
# ----------------------------------------------------------------------------------------------------
def start_grid(grid_size, grid_range):
    """Uniform grid of starting parameters, (grid_size², 2), row-major in (θ_0, θ_1)."""
    axis = torch.linspace(-grid_range, grid_range, grid_size, dtype=DTYPE)
    t0, t1 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([t0.reshape(-1), t1.reshape(-1)], dim=1)


def gradient_ascent(theta0, kind, mdp, adversaries, eps_sets, kappa, lr, steps):
    """Exact (sub)gradient ascent from every start at once. Returns the path (steps+1, B, n) and the
    gradient norm at the last step (B,)."""
    theta = theta0.clone()
    path = [theta]
    for _ in range(steps):
        theta = theta.detach().requires_grad_(True)
        J = objective(theta, kind, mdp, adversaries, eps_sets, kappa)
        (grad,) = torch.autograd.grad(J.sum(), theta)  # each J_b depends on theta_b only
        theta = (theta + lr * grad).detach()
        path.append(theta)
    return torch.stack(path), grad.norm(dim=1)


def probs_to_theta(p):
    """Inverse of π(go|s) = sigmoid(θ_s), with θ clipped to ±40 so that vertices stay finite."""
    p = p.clamp(1e-17, 1.0 - 1e-17)
    return (torch.log(p) - torch.log1p(-p)).clamp(-40.0, 40.0)


def is_local_max(theta, kind, mdp, adversaries, eps_sets, kappa, tol, snap=0.05):
    """Is the limit of one run a local maximum of its objective over the policy square [0, 1]^n?

    Softmax limits often lie at infinity (deterministic policies), where every gradient vanishes, so a
    small ‖∇J‖ alone cannot tell a stationary point from a slow plateau. Instead we move the policy
    p = π(go|·) itself: snap coordinates within `snap` of 0 or 1 to the face, then try 16 directions
    (those that stay inside the square) with steps of 0.01 and 0.03. It is a local maximum (a FOSP of
    the objective over the policy simplex) if no such move raises J by more than tol. Works for the
    nonsmooth ARPO objective too, since it compares values, not gradients. For n = 2 states only.
    """
    p = torch.sigmoid(theta)
    p_hat = torch.where(p < snap, torch.zeros_like(p), torch.where(p > 1 - snap, torch.ones_like(p), p))
    angles = torch.arange(16, dtype=DTYPE) * (2 * torch.pi / 16)
    directions = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    trials = torch.cat([p_hat + h * directions for h in (0.01, 0.03)])
    trials = trials[((trials >= 0) & (trials <= 1)).all(dim=1)]
    with torch.no_grad():
        J0 = objective(probs_to_theta(p_hat)[None], kind, mdp, adversaries, eps_sets, kappa)[0]
        J = objective(probs_to_theta(trials), kind, mdp, adversaries, eps_sets, kappa)
    return bool((J <= J0 + tol).all())


def cluster_limits(p_final, tol):
    """Leader clustering of the final policies π(go|·), (B, n): a point joins the first cluster whose
    leader is within tol (max-norm), else it starts a new one. Deterministic in the order of the starts."""
    leaders, labels = [], []
    for p in p_final:
        for c, leader in enumerate(leaders):
            if float((p - leader).abs().max()) <= tol:
                labels.append(c)
                break
        else:
            leaders.append(p)
            labels.append(len(leaders) - 1)
    return torch.tensor(labels)


def run_census(args, mdp, eps_sets, grid_size, steps, verbose=True):
    """Gradient ascent from the start grid for every objective; cluster and classify the limits.

    Returns {kind: {"paths", "labels", "kinds", "rows"}} and the reference numbers (V*, threshold).
    """
    if mdp.P.shape[0] != 2:
        raise ValueError("the census (its local-maximum test and its figures) needs a 2-state MDP")
    adversaries = all_adversaries(eps_sets)
    V_star = float(optimal_policy(mdp)[0] @ mdp.mu)
    scale = value_range(mdp)
    threshold = V_star - args.deceptive_margin * scale
    starts = start_grid(grid_size, args.grid_range)
    results = {}
    for kind in OBJECTIVES:
        t0 = time.time()
        path, grad_norm = gradient_ascent(starts, kind, mdp, adversaries, eps_sets, args.kappa, args.lr, steps)
        final = path[-1]
        with torch.no_grad():
            nat = natural_values(final, mdp) @ mdp.mu
            worst = worst_case_values(final, mdp, adversaries)[0] @ mdp.mu
            barpo = values_under(final, mdp, kl_adversary(final, eps_sets)) @ mdp.mu
        labels = cluster_limits(torch.sigmoid(final), args.cluster_tol)
        rows, kinds = [], []
        for c in range(int(labels.max()) + 1):
            members = labels == c
            row = {
                "theta": final[members].median(dim=0).values.tolist(),
                "p_go": torch.sigmoid(final[members]).mean(dim=0).tolist(),
                "natural": float(nat[members].mean()),
                "worst": float(worst[members].mean()),
                "barpo": float(barpo[members].mean()),
                "grad": float(grad_norm[members].max()),
                "share": float(members.double().mean()),
            }
            representative = final[members][0]  # the cluster's leader: the first start that ended there
            row["local_max"] = is_local_max(representative, kind, mdp, adversaries, eps_sets, args.kappa,
                                            tol=1e-6 * scale, snap=args.cluster_tol)
            if not row["local_max"]:
                row["kind"] = "not a FOSP yet (plateau)"
            elif row["natural"] >= threshold and row["worst"] >= threshold:
                row["kind"] = "optimal"
            elif row["natural"] < threshold and row["worst"] < threshold:
                row["kind"] = "deceptive" if row["natural"] - row["worst"] < V_star - threshold else "poor, fragile"
            elif row["natural"] >= threshold:
                row["kind"] = "good but fragile"
            else:
                row["kind"] = "other"
            rows.append(row)
            kinds.append(row["kind"])
        results[kind] = {"paths": path, "labels": labels, "kinds": kinds, "rows": rows}
        if verbose:
            print(f"  {kind:5s}: {steps} steps from {len(starts)} starts in {time.time() - t0:.1f} s,"
                  f" {len(rows)} limit cluster(s)", flush=True)
    return results, V_star, threshold


def deceptive_share(result):
    return sum(row["share"] for row in result["rows"] if row["kind"] == "deceptive")


def census_table(results, mdp, V_star):
    names = mdp.state_names
    lines = [
        f"| objective | limit | kind | θ at the end ({names[0]}, {names[1]}) "
        f"| π(go│{names[0]}), π(go│{names[1]}) | natural V^π(μ) | worst case V^(π∘ν*)(μ) | BARPO V^(π∘ν◇)(μ) "
        "| max ‖∇J‖ at the end | local max? | share of starts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in OBJECTIVES:
        rows = sorted(results[kind]["rows"], key=lambda r: -r["share"])
        for i, r in enumerate(rows):
            lines.append(
                f"| {kind.upper()} | {i + 1} | {r['kind']} | ({r['theta'][0]:+.1f}, {r['theta'][1]:+.1f}) "
                f"| {r['p_go'][0]:.3f}, {r['p_go'][1]:.3f} | {r['natural']:.2f} | {r['worst']:.2f} | {r['barpo']:.2f} "
                f"| {r['grad']:.1e} | {'yes' if r['local_max'] else 'no'} | {100 * r['share']:.1f} % |"
            )
    lines.append(f"\nOptimum: V*(μ) = {V_star:.2f} (natural = worst case = BARPO value at the optimal policy).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------
KIND_COLORS = {"optimal": "tab:green", "deceptive": "tab:red", "good but fragile": "tab:orange",
               "poor, fragile": "tab:purple", "other": "tab:gray", "not a FOSP yet (plateau)": "tab:olive"}
TITLES = {"spo": r"SPO: $V^{\pi}(\mu)$", "arpo": r"ARPO: $\min_\nu V^{\pi\circ\nu}(\mu)$",
          "barpo": r"BARPO: $V^{\pi\circ\nu^\diamond}(\mu)$, $\nu^\diamond$ = argmax KL"}


def landscape_grid(args):
    axis = torch.linspace(-args.plot_range, args.plot_range, args.plot_res, dtype=DTYPE)
    t0, t1 = torch.meshgrid(axis, axis, indexing="ij")
    return axis.numpy(), torch.stack([t0.reshape(-1), t1.reshape(-1)], dim=1)


def plot_landscapes(args, mdp, eps_sets, results, V_star, path_png):
    adversaries = all_adversaries(eps_sets)
    axis, thetas = landscape_grid(args)
    n = len(axis)
    maps = {}
    with torch.no_grad():
        for kind in OBJECTIVES:
            maps[kind] = objective(thetas, kind, mdp, adversaries, eps_sets, args.kappa).reshape(n, n).numpy()
    vmin, vmax = min(m.min() for m in maps.values()), max(m.max() for m in maps.values())
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6), constrained_layout=True)
    names = mdp.state_names
    stride = args.traj_stride
    for ax, kind in zip(axes, OBJECTIVES):
        # maps are indexed [θ_0, θ_1]; imshow wants [row = y = θ_1, column = x = θ_0]
        im = ax.imshow(maps[kind].T, origin="lower", extent=[axis[0], axis[-1], axis[0], axis[-1]],
                       cmap="viridis", vmin=vmin, vmax=vmax, aspect="equal")
        ax.contour(axis, axis, maps[kind].T, levels=15, colors="k", linewidths=0.3, alpha=0.5)
        path, labels, kinds = results[kind]["paths"].numpy(), results[kind]["labels"], results[kind]["kinds"]
        g = args.grid_size
        for i in range(0, g, stride):
            for j in range(0, g, stride):
                b = i * g + j
                color = KIND_COLORS[kinds[int(labels[b])]]
                ax.plot(path[:, b, 0], path[:, b, 1], color=color, linewidth=0.8, alpha=0.9)
                ax.plot(path[0, b, 0], path[0, b, 1], "o", color="white", markersize=2.5)
        for c, row in enumerate(results[kind]["rows"]):
            x, y = np.clip(row["theta"], axis[0] + 0.25, axis[-1] - 0.25)  # limits at infinity: drawn at the edge
            marker = "*" if row["kind"] == "optimal" else "X"
            ax.plot(x, y, marker, color=KIND_COLORS[row["kind"]], markersize=18, markeredgecolor="white",
                    label=f"{row['kind']} limit: {100 * row['share']:.0f} % of starts")
        ax.plot(axis, axis, "--", color="white", linewidth=0.8, alpha=0.6)
        ax.set_xlim(axis[0], axis[-1])
        ax.set_ylim(axis[0], axis[-1])
        ax.set_title(TITLES[kind] + (f" + {args.kappa}·$V^\\pi$" if kind != "spo" and args.kappa > 0 else ""))
        ax.set_xlabel(f"θ_{names[0]}  (π(go|{names[0]}) = sigmoid)")
        ax.set_ylabel(f"θ_{names[1]}  (π(go|{names[1]}) = sigmoid)")
        ax.legend(loc="lower right", fontsize=8, framealpha=0.8)
    fig.colorbar(im, ax=axes, shrink=0.85, label="objective value (discounted return from μ)")
    fig.suptitle(f"Exact landscapes and gradient-ascent paths (white dots: starts; "
                 f"dashed: θ_{names[0]} = θ_{names[1]}); "
                 f"V* = {V_star:.1f}. Limits at infinity are marked at the edge.")
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def plot_gap(args, mdp, eps_sets, path_png):
    adversaries = all_adversaries(eps_sets)
    axis, thetas = landscape_grid(args)
    n = len(axis)
    names = mdp.state_names
    with torch.no_grad():
        nat = (natural_values(thetas, mdp) @ mdp.mu).reshape(n, n).numpy()
        worst_V, which = worst_case_values(thetas, mdp, adversaries)
        worst = (worst_V @ mdp.mu).reshape(n, n).numpy()
        which = which.reshape(n, n).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), constrained_layout=True)
    extent = [axis[0], axis[-1], axis[0], axis[-1]]
    im = axes[0].imshow((nat - worst).T, origin="lower", extent=extent, cmap="magma", aspect="equal")
    axes[0].contour(axis, axis, (nat - worst).T, levels=[0.5, 2.0, 5.0], colors="w", linewidths=0.8)
    axes[0].plot(axis, axis, "--", color="cyan", linewidth=1.0,
                 label=f"θ_{names[0]} = θ_{names[1]}: both states act alike, gap exactly 0")
    axes[0].set_title(r"Fragility: $V^\pi(\mu) - V^{\pi\circ\nu^*}(\mu)$  (contours 0.5, 2, 5)")
    fig.colorbar(im, ax=axes[0], shrink=0.85, label="value lost to the strongest adversary")
    axes[0].legend(loc="lower right", fontsize=8)
    labels = ["ν = " + ", ".join(f"{names[s]}↦{names[int(nu[s])]}" for s in range(len(nu))) for nu in adversaries]
    cmap = plt.get_cmap("tab10", len(adversaries))
    im2 = axes[1].imshow(which.T, origin="lower", extent=extent, cmap=cmap, vmin=-0.5,
                         vmax=len(adversaries) - 0.5, aspect="equal", interpolation="nearest")
    cbar = fig.colorbar(im2, ax=axes[1], shrink=0.85, ticks=range(len(adversaries)))
    cbar.ax.set_yticklabels(labels, fontsize=8)
    axes[1].set_title("The strongest adversary ν* (its switches = ARPO's kinks)")
    for ax in axes:
        ax.set_xlabel(f"θ_{names[0]}")
        ax.set_ylabel(f"θ_{names[1]}")
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def plot_basins(args, mdp, results, path_png):
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), constrained_layout=True)
    g, r = args.grid_size, args.grid_range
    names = mdp.state_names
    kind_list = list(KIND_COLORS)
    cmap = matplotlib.colors.ListedColormap([KIND_COLORS[k] for k in kind_list])
    for ax, kind in zip(axes, OBJECTIVES):
        res = results[kind]
        codes = np.array([kind_list.index(res["kinds"][int(c)]) for c in res["labels"]]).reshape(g, g)
        half = r / (g - 1)
        ax.imshow(codes.T, origin="lower", extent=[-r - half, r + half, -r - half, r + half], cmap=cmap,
                  vmin=-0.5, vmax=len(kind_list) - 0.5, interpolation="nearest", aspect="equal")
        share = 100 * deceptive_share(res)
        ax.set_title(f"{kind.upper()}: where each start ends (deceptive: {share:.1f} %)")
        ax.set_xlabel(f"start θ_{names[0]}")
        ax.set_ylabel(f"start θ_{names[1]}")
    present = [k for k in kind_list if any(k in results[kind]["kinds"] for kind in OBJECTIVES)]
    handles = [matplotlib.patches.Patch(color=KIND_COLORS[k], label=k) for k in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(present))
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def plot_diagonal_and_route(args, mdp, eps_sets, results, V_star, path_png):
    """Left: the objectives along θ_base = θ_run (they coincide there). Right: along one SPO path that
    starts in ARPO's deceptive basin, the natural and worst-case values: SPO's route is fragile."""
    adversaries = all_adversaries(eps_sets)
    t = torch.linspace(-args.plot_range, args.plot_range, 401, dtype=DTYPE)
    diag = torch.stack([t, t], dim=1)
    with torch.no_grad():
        w = (natural_values(diag, mdp) @ mdp.mu).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    axes[0].plot(t.numpy(), w, color="k", label="SPO = ARPO = BARPO on the diagonal")
    axes[0].axhline(V_star, color="tab:green", linestyle=":", label=f"V* = {V_star:.1f}")
    axes[0].set_xlabel("t  (θ_base = θ_run = t: the same action probabilities in both states)")
    axes[0].set_ylabel("value from μ")
    axes[0].set_title("The only unexploitable direction first goes downhill")
    axes[0].legend(fontsize=8)

    # find a start that ARPO sends to a deceptive limit and that SPO sends to the optimum
    arpo, spo = results["arpo"], results["spo"]
    chosen = None
    for b in range(len(arpo["labels"])):
        if arpo["kinds"][int(arpo["labels"][b])] == "deceptive" and spo["kinds"][int(spo["labels"][b])] == "optimal":
            theta0 = arpo["paths"][0, b]
            if chosen is None or float(theta0.abs().sum()) < float(arpo["paths"][0, chosen].abs().sum()):
                chosen = b  # the one closest to the centre of the grid
    if chosen is not None:
        with torch.no_grad():
            for kind, color in (("spo", "tab:blue"), ("arpo", "tab:red")):
                path = results[kind]["paths"][:, chosen]
                nat = (natural_values(path, mdp) @ mdp.mu).numpy()
                worst = (worst_case_values(path, mdp, adversaries)[0] @ mdp.mu).numpy()
                steps = np.arange(len(nat))
                axes[1].plot(steps, nat, color=color, label=f"{kind.upper()} path: natural $V^\\pi$")
                axes[1].plot(steps, worst, color=color, linestyle="--",
                             label=f"{kind.upper()} path: worst case $V^{{\\pi\\circ\\nu^*}}$")
        start = results["arpo"]["paths"][0, chosen].tolist()
        axes[1].set_title(f"From the start θ = ({start[0]:+.1f}, {start[1]:+.1f}):"
                          " SPO passes through fragile policies")
        axes[1].set_xscale("symlog", linthresh=10)
    else:
        axes[1].set_title("no start reached a deceptive limit under ARPO")
    axes[1].axhline(V_star, color="tab:green", linestyle=":")
    axes[1].set_xlabel("gradient-ascent step")
    axes[1].set_ylabel("value from μ")
    axes[1].legend(fontsize=8)
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# --search: how common are deceptive ARPO basins among random 2-state ISA-MDPs?
# ----------------------------------------------------------------------------------------------------
def random_mdp(rng, gamma):
    P = torch.tensor(rng.dirichlet([1.0, 1.0], size=(2, 2)), dtype=DTYPE)
    R = torch.tensor(rng.uniform(-1.0, 1.0, size=(2, 2)), dtype=DTYPE)
    return TabularMDP(P=P, R=R, mu=torch.tensor([0.5, 0.5], dtype=DTYPE), gamma=gamma, state_names=("s0", "s1"))


def search_mdps(args):
    rng = np.random.default_rng(args.seed)
    eps_sets = [[0, 1], [0, 1]]
    found, tried, t0 = [], 0, time.time()
    print(f"searching {args.search_trials} random 2-state MDPs (both states confusable, γ = 0.9, seed {args.seed});"
          f" census grid {args.search_grid_size}², {args.search_steps} steps", flush=True)
    for trial in range(args.search_trials):
        mdp = random_mdp(rng, 0.9)
        isa, _ = check_isa(mdp, eps_sets)
        if isa:
            tried += 1
            results, _, _ = run_census(args, mdp, eps_sets, args.search_grid_size, args.search_steps, verbose=False)
            shares = {k: deceptive_share(results[k]) for k in OBJECTIVES}
            found.append((shares, mdp))
            if max(shares.values()) > 0:
                print(f"  trial {trial}: deceptive shares " + ", ".join(f"{k.upper()} {100 * v:.1f} %"
                                                                   for k, v in shares.items()), flush=True)
        if (trial + 1) % 10 == 0:
            hits = sum(1 for s, _ in found if s["arpo"] >= 0.2)
            print(f"  {trial + 1}/{args.search_trials} MDPs, {tried} ISA, {hits} with an ARPO deceptive share >= 20 %"
                  f" ({time.time() - t0:.0f} s)", flush=True)
    if not found:
        print("no ISA-MDP among the samples")
        return
    arpo_shares = np.array([s["arpo"] for s, _ in found])
    others = np.array([max(s["spo"], s["barpo"]) for s, _ in found])
    print(f"\nAmong {len(found)} ISA-MDPs: ARPO deceptive share > 0 in {(arpo_shares > 0).sum()},"
          f" >= 20 % in {(arpo_shares >= 0.2).sum()}; SPO or BARPO deceptive share > 0 in {(others > 0).sum()}"
          f" (largest {others.max():.3f})")
    shares, mdp = max(found, key=lambda x: x[0]["arpo"] - max(x[0]["spo"], x[0]["barpo"]))
    print(f"Most deceptive for ARPO: shares {({k: round(v, 3) for k, v in shares.items()})}")
    np.set_printoptions(precision=4, suppress=True)
    print(f"P[s, a, s'] =\n{mdp.P.numpy()}\nR[s, a] =\n{mdp.R.numpy()}")


# ----------------------------------------------------------------------------------------------------
if __name__ == "__main__":
    args = tyro.cli(Args)
    check_args(args)
    torch.set_num_threads(1)
    t_start = time.time()
    if args.search:
        search_mdps(args)
        print(f"total time {time.time() - t_start:.1f} s")
        raise SystemExit(0)

    mdp = make_commit_mdp()
    n_states = mdp.P.shape[0]
    eps_sets = parse_eps_sets(args.eps_sets, n_states)
    isa, why = check_isa(mdp, eps_sets)
    if not isa:
        raise SystemExit(f"error: --eps-sets {args.eps_sets!r} breaks the ISA property: {why}")
    V_opt, actions, _ = optimal_policy(mdp)
    names = mdp.state_names
    print(f"MDP 'commit': states {names}, actions {mdp.action_names}, γ = {mdp.gamma}, μ = {mdp.mu.tolist()}")
    print(f"adversary budget B(s): " + ", ".join(f"B({names[s]}) = {{{', '.join(names[t] for t in B)}}}"
                                                  for s, B in enumerate(eps_sets)))
    print(f"optimal actions: " + ", ".join(f"{names[s]}: {mdp.action_names[a]}" for s, a in enumerate(actions))
          + f"; V* = {V_opt.tolist()}, V*(μ) = {float(V_opt @ mdp.mu):.3f}; ISA property: {why}")

    # check: the strongest adversary by enumeration equals policy iteration on the adversary's MDP
    adversaries = all_adversaries(eps_sets)
    probe = torch.tensor(np.random.default_rng(0).uniform(-3, 3, size=(50, n_states)), dtype=DTYPE)
    enum_V = worst_case_values(probe, mdp, adversaries)[0]
    pi_V = torch.tensor(np.stack([worst_case_by_policy_iteration(th, mdp, eps_sets)[0] for th in probe]))
    print(f"check: strongest adversary by enumeration ({len(adversaries)} adversaries) vs policy iteration on the"
          f" adversary's MDP, 50 random policies: max |difference| = {float((enum_V - pi_V).abs().max()):.1e}")

    print(f"census: {args.grid_size}² starts in [-{args.grid_range}, {args.grid_range}]², {args.steps} steps of"
          f" size {args.lr}, kappa = {args.kappa}", flush=True)
    results, V_star, threshold = run_census(args, mdp, eps_sets, args.grid_size, args.steps)
    print()
    print(census_table(results, mdp, V_star))
    print(f"'deceptive' = natural and worst-case values below {threshold:.2f} (V* minus {args.deceptive_margin:g}"
          f" of the value range {value_range(mdp):.2f}) while robust (gap below that margin).")

    shares = {k: deceptive_share(results[k]) for k in OBJECTIVES}
    reproduced = shares["arpo"] >= 0.2 and shares["spo"] <= 0.05 and shares["barpo"] <= 0.05
    print(f"\nShare of starts ending at a deceptive FOSP: ARPO {100 * shares['arpo']:.1f} % (paper: about 1/3),"
          f" SPO {100 * shares['spo']:.1f} %, BARPO {100 * shares['barpo']:.1f} %.")
    print(f"Paper's claim reproduced (ARPO >= 20 %, SPO and BARPO <= 5 %): {'YES' if reproduced else 'NO'}")

    if args.plots:
        os.makedirs(args.out_dir, exist_ok=True)
        t0 = time.time()
        files = {name: os.path.join(args.out_dir, f"isa_mdp_{name}.png")
                 for name in ("landscapes", "gap", "basins", "diagonal")}
        plot_landscapes(args, mdp, eps_sets, results, V_star, files["landscapes"])
        plot_gap(args, mdp, eps_sets, files["gap"])
        plot_basins(args, mdp, results, files["basins"])
        plot_diagonal_and_route(args, mdp, eps_sets, results, V_star, files["diagonal"])
        print(f"figures ({time.time() - t0:.1f} s): " + ", ".join(files.values()))
    print(f"total time {time.time() - t_start:.1f} s")
