"""State perturbations in an l_inf ball, for evaluation attacks and for the robust training inner loops.

Every function takes a batch of *normalised* observations `obs` of shape (B, obs_dim) (the tensor the
policy consumes) and a radius `eps` in those units, and returns a detached tensor of the same shape and
dtype with every entry inside [obs - eps, obs + eps]. With eps = 0 the output equals the input exactly.
Defaults follow the literature (SA-PPO, ATLA, PA-AD): 10 steps of size eps/10. The policy/critic
arguments are the `Agent` of the training scripts: `agent.actor_mean(x)`, `agent.actor_logstd`,
`agent.get_value(x)`. No environment state lives here: these are pure functions of tensors and networks
(randomness from torch's global generator, so seed it for reproducible results).

    random  uniform noise in the ball                                        (the weakest baseline)
    critic  PGD that minimises the victim's own value estimate V(s')
    mad     KL-SGLD: maximise KL(pi(.|s) || pi(.|s')) -- the MAD attack and BARPO's inner adversary
    q_pgd   PGD that minimises Q(s, mu(s')) for a learned Q (the attack step of Robust Sarsa)
    pgd     the projected sign-gradient solver behind critic and q_pgd (and ARPO's inner adversary)
"""
import torch


def project(x, obs, eps):
    """Clamp x into the l_inf ball of radius eps around obs (eps: float or tensor broadcastable to obs)."""
    return torch.max(torch.min(x, obs + eps), obs - eps)


def _check(obs, eps, steps):
    if not (eps >= 0):
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")


def random(agent, obs, eps, **_):
    """Uniform noise in [-eps, eps]^d (the agent is unused; the signature matches the other attacks)."""
    _check(obs, eps, 0)
    return project(obs + eps * (2 * torch.rand_like(obs) - 1), obs, eps).detach()


def pgd(obs, eps, objective, steps=10, step_size=None, maximise=False):
    """Projected sign-gradient descent on objective(x) -> scalar (ascent if maximise), from a uniform random
    start in the ball: the solver behind critic, q_pgd and ARPO's inner adversary."""
    _check(obs, eps, steps)
    eta = eps / steps if step_size is None else step_size
    direction = 1.0 if maximise else -1.0
    obs = obs.detach()
    x = project(obs + eps * (2 * torch.rand_like(obs) - 1), obs, eps)
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():  # attacks may be called under torch.no_grad()
            (grad,) = torch.autograd.grad(objective(x), x)
        x = project(x.detach() + direction * eta * grad.sign(), obs, eps)
    return x.detach()


def critic(agent, obs, eps, steps=10, step_size=None, **_):
    """PGD minimising the critic's value V(s') from a uniform random start in the ball."""
    return pgd(obs, eps, lambda x: agent.get_value(x).sum(), steps, step_size)


def mad(agent, obs, eps, steps=10, step_size=None, beta=1e-5, normalize_sigma=False, **_):
    """KL-SGLD (SPEC §4): sign-gradient Langevin ascent on KL(pi(.|s) || pi(.|s')).

    For a Gaussian policy with state-independent std sigma the KL is sum_j (mu(s')_j - mu(s)_j)^2 / (2 sigma_j^2),
    so we ascend g = grad_{s'} sum_j ((mu(s')_j - mu(s)_j) / sigma_j)^2 (= 2 KL). Its gradient vanishes at s' = s,
    hence the perturbed start s'_0 = s + eta * sign(xi), xi ~ N(0, 2 eta beta). Step t adds Langevin noise
    sqrt(2 eta beta)/(t+2) * N(0, I) to g before the sign. beta = 1e-5 is the training regulariser's value;
    SA-PPO's test-time MAD used beta = 1 (noisier). normalize_sigma divides sigma by its mean (scale-free).
    """
    _check(obs, eps, steps)
    eta = eps / steps if step_size is None else step_size
    obs = obs.detach()
    with torch.no_grad():
        mu_clean = agent.actor_mean(obs)
        sigma = agent.actor_logstd.exp().expand_as(mu_clean)
        if normalize_sigma:
            sigma = sigma / sigma.mean()
        noise_scale = (2 * eta * beta) ** 0.5
        x = project(obs + eta * torch.randn_like(obs).sign(), obs, eps)
    for t in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            kl2 = (((agent.actor_mean(x) - mu_clean) / sigma) ** 2).sum()
            (grad,) = torch.autograd.grad(kl2, x)
        x = project(x.detach() + eta * (grad + noise_scale / (t + 2) * torch.randn_like(grad)).sign(), obs, eps)
    return x.detach()


def q_pgd(agent, obs, eps, q_net, steps=10, step_size=None, **_):
    """PGD minimising Q(s, mu(s')) from a uniform random start: the Robust Sarsa attack step.

    q_net(obs, action) -> (B, 1) is the victim's learned action-value; the state argument stays clean,
    only the policy's input is perturbed."""
    obs = obs.detach()
    return pgd(obs, eps, lambda x: q_net(obs, agent.actor_mean(x)).sum(), steps, step_size)


def kl_divergence(agent, obs, obs_adv):
    """Per-sample KL(pi(.|obs) || pi(.|obs_adv)) of the Gaussian policy with state-independent std."""
    with torch.no_grad():
        sigma = agent.actor_logstd.exp()
        return (((agent.actor_mean(obs_adv) - agent.actor_mean(obs)) / sigma) ** 2).sum(-1) / 2
