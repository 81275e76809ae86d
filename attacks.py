"""State perturbations in an l_inf ball, for evaluation attacks and for the robust training inner loops.

Every perturbation takes a batch of *normalised* observations `obs` of shape (B, obs_dim) (the tensor the
policy consumes) and a radius `eps` in those units, and returns a detached tensor of the same shape and
dtype with every entry inside [obs - eps, obs + eps]. With eps = 0 the output equals the input exactly.
Defaults follow the literature (SA-PPO, ATLA, PA-AD): 10 steps of size eps/10. The policy/critic
arguments are the `Agent` of the training scripts: `agent.actor_mean(x)`, `agent.actor_logstd`,
`agent.get_value(x)`. No environment state lives here: these are pure functions of tensors and networks.
Randomness comes from `generator` (a torch.Generator) where given, else from torch's global generator: the
training scripts give their inner adversaries a generator of their own, so that the adversary's draws do
not shift the rollout's action sampling (at eps = 0 a robust script then repeats spo_ppo.py's run exactly).

Arguments with a default are keyword-only, and a misspelled keyword is a TypeError (no catch-all **kwargs).

Attacks (evaluation-time perturbations, evaluate.py):
    random                  uniform noise in the ball (the weakest baseline)
    critic                  PGD minimising the victim's own value estimate V(s')
    mad                     KL-SGLD ascent on KL(pi(.|s) || pi(.|s')): MAD; the inner solver of SA-PPO, BARPO, WocaR
    q_pgd                   PGD minimising Q(s, mu(s')) for a learned Q (the attack step of Robust Sarsa)
Inner-solver pieces (training scripts):
    pgd                     projected sign-gradient solver (random start) behind critic, q_pgd, ARPO's inner adversary
    mlp_input_grad          grad_x of a function of a Linear/Tanh MLP's output, backpropagated by hand (fast)
    tanh_mlp_layers         a Linear/Tanh MLP's layers, read once for mlp_input_grad
    gaussian_ppo_loss_grad  gradient of the PPO clipped loss w.r.t. the policy mean (ARPO's inner loss, fast path)
Learned-attack projections (learned_attack.py):
    bounded_perturbation    s + eps * hardtanh(a) for a learned adversary's action a (SA-RL)
    paad_actor              sign-gradient steps pushing the victim's mean action along a direction d (PA-AD's actor)
Bounds and utilities:
    interval_bounds         IBP bounds of a Linear/Tanh MLP's output over the ball (SA-PPO convex, RADIAL-PPO, WocaR-PPO)
    crown_ibp_bounds        CROWN-IBP bounds of the same, usually tighter (SA-PPO convex early in its ε ramp, --convex-bound mixed)
    kl_divergence           per-sample KL(pi(.|s) || pi(.|s')) of the Gaussian policy
    project                 clamp into the ball
    DEFAULT_EPSILON         the literature's radius per environment family
"""
import torch

# The l_inf radius per environment family, in normalised observation units: the values of the robust-RL literature
# since SA-PPO. The one table of default --epsilon for every training script (RADIAL-PPO trains Walker2d at its
# authors' 0.075), evaluate.py and the learned attacks.
DEFAULT_EPSILON = {"Hopper": 0.075, "Walker2d": 0.05, "HalfCheetah": 0.15, "Ant": 0.15}


def project(x, obs, eps):
    """Clamp x into the l_inf ball of radius eps around obs (eps: float or tensor broadcastable to obs)."""
    return torch.max(torch.min(x, obs + eps), obs - eps)


def _check(obs, eps, steps):
    if not (eps >= 0):
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def _uniform(obs, generator=None):
    """U(-1, 1) noise of obs's shape, from `generator` (None: torch's global generator)."""
    return 2 * torch.rand(obs.shape, generator=generator, dtype=obs.dtype) - 1


def random(agent, obs, eps, *, generator=None):
    """Uniform noise in [-eps, eps]^d (the agent is unused; the positional arguments match the other attacks')."""
    _check(obs, eps, 1)
    return project(obs + eps * _uniform(obs, generator), obs, eps).detach()


def tanh_mlp_layers(net):
    """The layers of an nn.Sequential of Linear and Tanh layers (the scripts' actor mean and critic) as a list of
    (W, W^T, b) for a Linear and None for a Tanh; False for any other net. An attack reads them once (the weights do
    not change during it) and hands them to every mlp_input_grad call, which then skips the module lookups."""
    layers = list(net) if isinstance(net, torch.nn.Sequential) else []
    if not layers or not all(isinstance(m, (torch.nn.Linear, torch.nn.Tanh)) for m in layers):
        return False
    return [(m.weight, m.weight.t(), m.bias) if isinstance(m, torch.nn.Linear) else None for m in layers]


def mlp_input_grad(net, x, head_grad, *, layers=None):
    """grad_x of a function h(y) of a network's output y = net(x), given head_grad(y) = dh/dy.

    The inner loops of ARPO and BARPO take this gradient 10 times per minibatch, and for 64-sample batches
    autograd's per-op overhead dominates. For the scripts' networks (nn.Sequential of Linear and Tanh
    layers: the actor mean and the critic) we run the forward with plain tensor ops and backpropagate by
    hand (Linear: g <- g W; Tanh: g <- g (1 - h^2), aten's fused tanh_backward): the same gradient up to float rounding
    (tests/test_robust.py checks it against autograd), about twice as fast. Any other net uses autograd.
    `layers` is tanh_mlp_layers(net), if the caller has read it already."""
    layers = tanh_mlp_layers(net) if layers is None else layers
    with torch.no_grad():
        if not layers:
            with torch.inference_mode(False), torch.enable_grad():  # also when called from an inference-mode rollout
                x = x.detach().clone().requires_grad_(True)
                y = net(x)
                return torch.autograd.grad(y, x, grad_outputs=head_grad(y.detach()).clone())[0]
        outputs = [x]  # the input of every layer, then the output mu
        for layer in layers:
            outputs.append(torch.addmm(layer[2], outputs[-1], layer[1]) if layer else torch.tanh(outputs[-1]))
        g = head_grad(outputs[-1])
        for layer, out in zip(reversed(layers), reversed(outputs[1:])):
            g = g @ layer[0] if layer else torch.ops.aten.tanh_backward(g, out)  # g (1 - out^2)
        return g


def pgd(obs, eps, *, objective=None, steps=10, step_size=None, maximise=False, net=None, head_grad=None, generator=None):
    """Projected sign-gradient descent (ascent if maximise) from a uniform random start in the ball: the
    solver behind critic, q_pgd and ARPO's inner adversary. The gradient is that of objective(x) -> scalar
    (autograd), or, if net and head_grad are given, that of a function h(net(x)) with dh/dy = head_grad(y)
    (fast, see mlp_input_grad)."""
    if (objective is None) == (net is None) or (net is None) != (head_grad is None):  # neither, both, or net alone
        raise TypeError("pgd takes either objective= or both net= and head_grad=")
    _check(obs, eps, steps)
    eta = eps / steps if step_size is None else step_size
    direction = 1.0 if maximise else -1.0
    obs = obs.detach()
    low, high = obs - eps, obs + eps
    x = torch.clamp(obs + eps * _uniform(obs, generator), low, high)
    layers = tanh_mlp_layers(net) if net is not None else None
    for _ in range(steps):
        if net is not None:
            grad = mlp_input_grad(net, x, head_grad, layers=layers)
        else:
            x.requires_grad_(True)
            with torch.enable_grad():  # attacks may be called under torch.no_grad()
                (grad,) = torch.autograd.grad(objective(x), x)
        x = torch.clamp(torch.add(x.detach(), grad.sign(), alpha=direction * eta), low, high)
    return x


def gaussian_ppo_loss_grad(agent, actions, oldlogprob, advantages, clip_coef):
    """head_grad for pgd / mlp_input_grad: mu -> d l_i / d mu of the per-sample PPO clipped loss
    l_i = max(-A_i r_i, -A_i clip(r_i, 1 ± c)), r_i = N(a_i; mu_i, sigma) / pi_old_i, of the scripts' Gaussian policy
    (state-independent sigma). ARPO's inner loss differentiated by hand; tests/test_robust.py holds it equal to autograd.
    The clipped branch has zero slope, so dl/dlog r = -A r where the unclipped branch is the max (r <= 1 + c if A > 0,
    r >= 1 - c if A < 0) and 0 elsewhere; dlog N/dmu = (a - mu) / sigma^2."""
    var = agent.actor_logstd.detach().exp() ** 2
    log_ratio_const = -0.5 * torch.log(2 * torch.pi * var).sum() - oldlogprob  # log r = const - sum (a - mu)^2 / 2var
    ratio_low = torch.where(advantages > 0, 0.0, 1 - clip_coef)  # where the unclipped branch is the max
    ratio_high = torch.where(advantages > 0, 1 + clip_coef, torch.inf)

    two_var, neg_advantages = 2 * var, -advantages  # constant over the solver's steps: computed once

    def head_grad(mu):
        diff = actions - mu
        ratio = (log_ratio_const - (diff * diff / two_var).sum(1)).exp()
        return (neg_advantages * ratio * ((ratio >= ratio_low) & (ratio <= ratio_high))).unsqueeze(1) * diff / var

    return head_grad


def critic(agent, obs, eps, *, steps=10, step_size=None, generator=None):
    """PGD minimising the critic's value V(s') from a uniform random start in the ball."""
    return pgd(obs, eps, steps=steps, step_size=step_size, net=agent.critic, head_grad=torch.ones_like, generator=generator)


def mad(agent, obs, eps, *, steps=10, step_size=None, beta=1e-5, normalize_sigma=False, generator=None):
    """KL-SGLD (SA-PPO's solver; docs/design.md §3): sign-gradient Langevin ascent on KL(pi(.|s) || pi(.|s')).

    For a Gaussian policy with state-independent std sigma the KL is sum_j (mu(s')_j - mu(s)_j)^2 / (2 sigma_j^2),
    so we ascend g = grad_{s'} sum_j ((mu(s')_j - mu(s)_j) / sigma_j)^2 (= 2 KL). Its gradient vanishes at s' = s,
    hence the perturbed start s'_0 = s + eta * sign(xi), xi ~ N(0, 1) (a random corner of the eta-box: its sign does
    not depend on beta, though SA-PPO's code scales xi by sqrt(2 eta beta)). Step t adds Langevin noise
    sqrt(2 eta beta)/(t+2) * N(0, I) to g before the sign. beta = 1e-5 is the training regulariser's value;
    SA-PPO's test-time MAD used beta = 1 (noisier). normalize_sigma divides sigma by its mean (scale-free).
    """
    _check(obs, eps, steps)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    eta = eps / steps if step_size is None else step_size
    with torch.no_grad():
        obs = obs.detach()
        low, high = obs - eps, obs + eps
        mu_clean = agent.actor_mean(obs)
        sigma = agent.actor_logstd.exp().expand_as(mu_clean)
        if normalize_sigma:
            sigma = sigma / sigma.mean()
        two_over_var = 2 / sigma**2
        noise_scale = (2 * eta * beta) ** 0.5
        x = torch.clamp(obs + eta * torch.randn(obs.shape, generator=generator, dtype=obs.dtype).sign(), low, high)
        layers = tanh_mlp_layers(agent.actor_mean)
        for t in range(steps):
            # d/dmu of sum_j ((mu_j - mu_clean_j) / sigma_j)^2 is 2 (mu - mu_clean) / sigma^2
            grad = mlp_input_grad(agent.actor_mean, x, lambda mu: (mu - mu_clean) * two_over_var, layers=layers)
            noise = torch.randn(grad.shape, generator=generator, dtype=grad.dtype)
            x = torch.clamp(x + eta * (grad + noise_scale / (t + 2) * noise).sign(), low, high)
    return x


def q_pgd(agent, obs, eps, q_net, *, steps=10, step_size=None, generator=None):
    """PGD minimising Q(s, mu(s')) from a uniform random start: the Robust Sarsa attack step.

    q_net(obs, action) -> (B, 1) is the victim's learned action-value; the state argument stays clean,
    only the policy's input is perturbed."""
    obs = obs.detach()
    return pgd(obs, eps, objective=lambda x: q_net(obs, agent.actor_mean(x)).sum(), steps=steps, step_size=step_size,
               generator=generator)


def kl_divergence(agent, obs, obs_adv):
    """Per-sample KL(pi(.|obs) || pi(.|obs_adv)) of the Gaussian policy with state-independent std."""
    with torch.no_grad():
        sigma = agent.actor_logstd.exp()
        return (((agent.actor_mean(obs_adv) - agent.actor_mean(obs)) / sigma) ** 2).sum(-1) / 2


def bounded_perturbation(obs, eps, action):
    """SA-RL's perturbation of a learned adversary: s' = s + eps * hardtanh(action), action in R^obs_dim.

    hardtanh(a) = clamp(a, -1, 1), so every entry of s' - s lies in [-eps, eps] whatever the adversary
    outputs (we project once more so float rounding cannot leave the ball). eps = 0 gives s' = s exactly."""
    _check(obs, eps, 1)  # (no steps here)
    obs = obs.detach()
    return project(obs + eps * torch.clamp(action.detach(), -1.0, 1.0), obs, eps)


def paad_actor(agent, obs, eps, direction, *, steps=10, step_size=None):
    """PA-AD's "actor": the state perturbation in B_eps(s) that pushes the victim's mean action along the
    director's direction d (a vector in the victim's action space, one per row of obs).

    We maximise the projection of the action change on d, <mu(s') - mu(s), d> (mu(s) is a constant), by
    `steps` sign-gradient ascent steps of size eps/steps from s' = s. Its gradient J_mu(s')^T d is not zero
    at s' = s (unlike MAD's KL), so no random start is needed, and only d's direction matters (rescaling d
    does not change the sign of the gradient). The literature also uses the cosine similarity of the action
    change and d; the projection additionally rewards moving the action further along d.

    The learned attack calls this at every rollout step, so the work that does not change over the steps is done
    once: the actor's layers are read once (as pgd and mad do), and if its last layer is linear, mu = W h + b,
    the gradient of <mu, d> with respect to h is the constant d W: the steps run the forward and backward only
    through the layers before it, starting the backward at d W (the product mlp_input_grad would compute in
    every step, so the same numbers)."""
    _check(obs, eps, steps)
    eta = eps / max(steps, 1) if step_size is None else step_size
    with torch.no_grad():
        obs = obs.detach()
        d = direction.detach() / (direction.detach().norm(dim=-1, keepdim=True) + 1e-8)  # unit direction
        low, high = obs - eps, obs + eps
        x = obs.clone()
        layers, head = tanh_mlp_layers(agent.actor_mean), d
        if layers and len(layers) > 1 and layers[-1] is not None:  # last layer linear: start the backward at d W
            head, layers = d @ layers[-1][0], layers[:-1]
        for _ in range(steps):
            grad = mlp_input_grad(agent.actor_mean, x, lambda mu: head, layers=layers)  # d/ds' <mu(s'), d> = J^T d
            x = torch.clamp(torch.add(x, grad.sign(), alpha=eta), low, high)  # = x + eta * sign: eta * (+-1 or 0) is exact
    return x


def interval_bounds(net, obs, eps):
    """Interval bound propagation (IBP) of an nn.Sequential of Linear and Tanh layers over B_eps(obs).

    Returns (lower, upper), each (B, out_dim), such that lower <= net(x) <= upper for every x with
    |x - obs|_inf <= eps. A Linear layer maps the box with centre c and radius r to centre W c + b and
    radius |W| r; tanh is monotone, so it maps [l, u] to [tanh l, tanh u]. Batched and differentiable in
    the weights (and in obs), as the robust training losses need; eps may be a float or a tensor that
    broadcasts to obs. eps = 0 gives lower = upper = net(obs)."""
    if not isinstance(net, torch.nn.Sequential) or not all(isinstance(m, (torch.nn.Linear, torch.nn.Tanh)) for m in net):
        raise TypeError("interval_bounds needs an nn.Sequential of Linear and Tanh layers")
    if not (torch.as_tensor(eps) >= 0).all():
        raise ValueError(f"eps must be >= 0, got {eps}")
    centre, radius = obs, torch.zeros_like(obs) + eps
    for m in net:
        if isinstance(m, torch.nn.Linear):
            centre, radius = torch.nn.functional.linear(centre, m.weight, m.bias), radius @ m.weight.abs().t()
        else:  # monotone: the box's corners map to the new box's corners
            lower, upper = torch.tanh(centre - radius), torch.tanh(centre + radius)
            centre, radius = (upper + lower) / 2, (upper - lower) / 2
    return centre - radius, centre + radius


# CROWN's tangent points. For an interval [l, u] across 0, tanh's upper line is the tangent at the d >= 0 whose tangent
# passes through (l, tanh l). d depends on l alone, so, as auto_LiRPA does, it is found once, by bisection in float64,
# for l on a grid (step 0.01, down to -20), and looked up: a query takes the grid point just left of its l, whose
# tangent is still above tanh on all of [l, u], a little looser. (Bisection at every query made the mixed regulariser
# 3.5x slower: 33 ms against 9.3 for a 64-sample minibatch of a 64-64 actor.)
TANGENT_STEP, TANGENT_RANGE = 0.01, 20.0
_tangent_points = None


def _tangent_line_through(end, far):
    """(k, b) of a line above tanh on [end, far], end <= 0 <= far: the tangent through (g, tanh g) for the grid point
    g < end next to it; where end is beyond the table, the horizontal line at tanh(far) (tanh is increasing)."""
    global _tangent_points
    if _tangent_points is None:
        g = -torch.arange(int(round(TANGENT_RANGE / TANGENT_STEP)) + 1, dtype=torch.float64) * TANGENT_STEP
        lo, hi = torch.zeros_like(g), torch.full_like(g, TANGENT_RANGE)
        for _ in range(60):  # f(d) = tanh d - tanh g - tanh'(d) (d - g): f(0) <= 0 < f(hi); keep hi, the valid side
            d = (lo + hi) / 2
            above = torch.tanh(d) - torch.tanh(g) - (1 - torch.tanh(d) ** 2) * (d - g) >= 0
            lo, hi = torch.where(above, lo, d), torch.where(above, d, hi)
        _tangent_points = hi
    index = torch.floor(-end / TANGENT_STEP).long() + 1
    inside = index < len(_tangent_points)
    d = _tangent_points.to(end.dtype)[index.clamp(max=len(_tangent_points) - 1)]
    k = 1 - torch.tanh(d) ** 2
    return torch.where(inside, k, 0.0), torch.where(inside, torch.tanh(d) - k * d, torch.tanh(far))


def _tanh_relaxation(l, u):
    """Lines below and above tanh on [l, u], as CROWN draws them (Zhang et al., 2018, "general activations"): returns
    (kl, bl, ku, bu) with kl z + bl <= tanh z <= ku z + bu for every l <= z <= u. tanh is convex below 0 and concave above.
    The chord is a valid upper line iff its slope is at most tanh'(u) (always where u <= 0) and a valid lower line iff at
    most tanh'(l) (always where l >= 0); where it is not, the line is a tangent: at the midpoint where [l, u] lies on one
    side of 0, else the tangent that passes through the far end point (_tangent_line_through)."""
    tl, tu = torch.tanh(l), torch.tanh(u)
    chord_k = (tu - tl) / (u - l).clamp(min=1e-12)
    chord_k = torch.where(u - l > 1e-6, chord_k, 1 - tl ** 2)  # a point interval: the tangent
    chord_b = tl - chord_k * l
    mid = (l + u) / 2
    mid_k = 1 - torch.tanh(mid) ** 2
    mid_b = torch.tanh(mid) - mid_k * mid
    up_k, up_b = _tangent_line_through(l.clamp(max=0).detach(), u.clamp(min=0).detach())
    lo_k, lo_b = _tangent_line_through((-u).clamp(max=0).detach(), (-l).clamp(min=0).detach())  # tanh is odd: mirror
    lo_b = -lo_b
    upper_chord = (u <= 0) | (chord_k <= 1 - tu ** 2)  # the first test by shape, the second where float rounding could fail it
    lower_chord = (l >= 0) | (chord_k <= 1 - tl ** 2)
    ku = torch.where(l >= 0, mid_k, torch.where(upper_chord, chord_k, up_k))
    bu = torch.where(l >= 0, mid_b, torch.where(upper_chord, chord_b, up_b))
    kl = torch.where(u <= 0, mid_k, torch.where(lower_chord, chord_k, lo_k))
    bl = torch.where(u <= 0, mid_b, torch.where(lower_chord, chord_b, lo_b))
    return kl, bl, ku, bu


def crown_ibp_bounds(net, obs, eps):
    """CROWN-IBP (Zhang et al., 2020) of an nn.Sequential of Linear and Tanh layers over B_eps(obs): IBP's forward pass
    gives each tanh's input interval; the output's bounds are then linear functions of the input, carried backward from
    the last layer through each tanh's lines (_tanh_relaxation; a positive coefficient takes the lower line for the lower
    bound, a negative one the upper) and each Linear layer, and evaluated at their worst over the box. Same contract as
    interval_bounds (sound, batched, differentiable in the weights); usually much tighter at small eps."""
    if not isinstance(net, torch.nn.Sequential) or not all(isinstance(m, (torch.nn.Linear, torch.nn.Tanh)) for m in net) \
            or not isinstance(net[-1], torch.nn.Linear):
        raise TypeError("crown_ibp_bounds needs an nn.Sequential of Linear and Tanh layers ending in Linear")
    if not (torch.as_tensor(eps) >= 0).all():
        raise ValueError(f"eps must be >= 0, got {eps}")
    radius = torch.zeros_like(obs) + eps
    centre, lines = obs, []
    for m in net:
        if isinstance(m, torch.nn.Linear):
            centre, radius = torch.nn.functional.linear(centre, m.weight, m.bias), radius @ m.weight.abs().t()
        else:
            lines.append(_tanh_relaxation(centre - radius, centre + radius))
            lower, upper = torch.tanh(centre - radius), torch.tanh(centre + radius)
            centre, radius = (upper + lower) / 2, (upper - lower) / 2
    a_lo = a_up = net[-1].weight.expand(len(obs), -1, -1)  # (B, out, width): y >= a_lo z + c_lo, y <= a_up z + c_up
    c_lo = c_up = net[-1].bias.expand(len(obs), -1)
    for m in reversed(net[:-1]):
        if isinstance(m, torch.nn.Linear):
            c_lo, c_up = c_lo + a_lo @ m.bias, c_up + a_up @ m.bias
            a_lo, a_up = a_lo @ m.weight, a_up @ m.weight
        else:
            kl, bl, ku, bu = (t.unsqueeze(1) for t in lines.pop())
            pos, neg = a_lo.clamp(min=0), a_lo.clamp(max=0)
            c_lo, a_lo = c_lo + (pos * bl + neg * bu).sum(2), pos * kl + neg * ku
            pos, neg = a_up.clamp(min=0), a_up.clamp(max=0)
            c_up, a_up = c_up + (pos * bu + neg * bl).sum(2), pos * ku + neg * kl
    x, r = obs.unsqueeze(2), (torch.zeros_like(obs) + eps).unsqueeze(2)
    lower = (a_lo @ x).squeeze(2) + c_lo - (a_lo.abs() @ r).squeeze(2)
    upper = (a_up @ x).squeeze(2) + c_up + (a_up.abs() @ r).squeeze(2)
    return lower, upper
