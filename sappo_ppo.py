"""SA-PPO: state-adversarial PPO, i.e. PPO plus a policy-smoothness regulariser (CleanRL style, gymnasium 1.x).

Objective (Zhang et al., "Robust Deep Reinforcement Learning against Adversarial Perturbations on State
Observations", NeurIPS 2020): the agent acts on the true state, and its policy loss pays for how far an
ε-bounded observation perturbation can move its action distribution:

    min_θ  L_clip(θ) − c_H·H(π_θ) + κ · E_s[ R_ε(s; θ) ],    R_ε(s; θ) = max_{ŝ ∈ B_ε(s)} Σ_j ((μ_θ(ŝ) − μ_θ(s)) / σ_j)²

With a state-independent σ, R = 2·max KL(π(·|s) ‖ π(·|ŝ)): κ is in the authors' units (their code's Σ(Δμ/σ)²).
The max is estimated by --method:
    sgld    from below: ŝ = K steps of KL-SGLD, held fixed;  R = Σ_j ((μ(ŝ) − sg[μ(s)]) / σ_j)²
    convex  from above: [l, u] = bounds of μ over B_ε(s);  R = Σ_j max(|u − μ(s)|, |l − μ(s)|)_j² / σ_j²
            (--convex-bound ibp: interval bounds; mixed: β_t·IBP + (1 − β_t)·CROWN-IBP, β_t = ε_t / ε, the authors')
            (the gradient flows through the bounds and through μ(s))

Pseudocode, one iteration (clean rollouts and critic as in SPO):
    roll out num_steps with π_θ on the clean states, store (s, a, log π_old(a|s), r, done, V(s))
    compute GAE advantages Â and returns
    for update_epochs: for each minibatch, j = 0, 1, ..., M − 1 (M = update_epochs · num_minibatches):
        ε_t = ε · min(1, (iteration − 1 + j/M) / (eps_warmup · num_iterations))            # SA-PPO: ε ramp
        sgld:   ŝ = attacks.mad(s; θ, ε_t): start s + η·sign(ξ), then K steps ŝ ← clip_{B_ε_t(s)}(ŝ + η·sign(g + noise)),
                η = ε_t/K, g = ∇_ŝ Σ_j ((μ(ŝ) − μ(s))/σ)_j²; the last iterate, detached              # SA-PPO
        convex: [l, u] = attacks.interval_bounds(μ_θ, s, ε_t)                                       # SA-PPO
                mixed: β_t·[l, u] + (1 − β_t)·attacks.crown_ibp_bounds(μ_θ, s, ε_t), β_t = ε_t / ε          # SA-PPO
        L = L_clip(s) + κ · mean_i R_ε_t(s_i) − ent_coef·H + vf_coef·L_V                       # SA-PPO: policy only
        L_clip(x) = mean_i max(-r_i(x)Â_i, -clip(r_i(x), 1±clip_coef)Â_i),  r_i(x) = π_θ(a_i|x)/π_old(a_i|s_i)
        one Adam step on L

Flags that matter: --epsilon, --kappa (0: exactly spo_ppo.py's run), --method, --convex-bound, --eps-warmup, --detach-std.
Defaults per env, the authors' robust_ppo_eps / robust_ppo_reg (ε ramp over 75% of the updates everywhere:
732 of 976 iterations, Ant 3662 of 4882):
    env            ε       κ sgld   κ convex
    Hopper         0.075   1.0      0.1
    Walker2d       0.05    0.1      0.1
    HalfCheetah    0.15    0.1      0.1
    Ant            0.15    0.003    0.003

Reconstruction from the authors' code, huanzhang12/SA_PPO at 7f5193e: src/policy_gradients/steps.py
(robust_ppo_step, get_state_kl_bound_sgld), src/policy_gradients/convex_relaxation.py, src/config_{hopper,walker}_
robust_ppo_{sgld,convex}.json (Hopper's SGLD κ is 1.0 there; the first release, e0e02e6, had 0.1). HalfCheetah/Ant
convex κ: huanzhang12/ATLA_robust_RL at dfdf8f5, src/config_{halfcheetah,ant}_sappo_convex.json; HalfCheetah SGLD κ:
umd-huang-lab/WocaR-RL at 2856174, WocaR-PPO/src/config_halfcheetah_robust_ppo_sgld.json. No SGLD κ for Ant was
released: 0.003 is our choice (the convex Ant κ, and the SGLD weight of WocaR's Ant config).
    * ε ramp: auto_LiRPA's LinearScheduler(start=1, length=L) stepped as the authors step it, once per minibatch,
      so ε_t = 0 on the first minibatch and changes within an iteration (arpo/barpo_ppo.py ramp per iteration).
    * SGLD: attacks.mad is get_state_kl_bound_sgld (start, step ε_t/K, noise √(2ηβ)/(t+2), last iterate, no
      re-clip to ±10). The authors add the noise to the gradient of the minibatch *mean* of Σ_j(Δμ/σ)², attacks.mad
      to that of the sum, |B| times larger; we pass β·|B|², so --inner-beta is the authors' β = 1e-5 with their steps.
    * convex: by default pure IBP, the cheap setting the authors' README offers (--robust-ppo-beta-scheduler-opts
      "start=0,length=1"), with a warning that it may need more training. --convex-bound mixed is their default:
      β_t·IBP + (1 − β_t)·CROWN-IBP with β_t rising 0 → 1 on ε's ramp (CROWN-IBP early, pure IBP for the last 25%).
      Our CROWN-IBP (attacks.crown_ibp_bounds) draws tanh's lines as auto_LiRPA does, tangent points from a table
      (step 0.01) as theirs; its grid and lookup are ours, so bounds can differ from auto_LiRPA's in the last digits.
    * Quirks kept: σ is not detached in R, so the regulariser also pushes log σ up (--detach-std detaches it);
      the SGLD variant detaches μ(s), the convex one does not (as in their code).
The PPO around the regulariser is spo_ppo.py's, CleanRL's by default; spo_ppo.py's flags give the authors' (the critic
fitted first on its own steps, no gradient clipping, no annealing on HalfCheetah: --value-first --max-grad-norm 0
--no-anneal-lr, benchmark.py's *_authors runs and its calibrated preset). Every untagged line is spo_ppo.py's, so
`diff spo_ppo.py sappo_ppo.py` shows SA-PPO.
"""
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import mujoco
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.normal import Normal
from torch.utils.tensorboard import SummaryWriter

import attacks


# SA-PPO: default l_inf radius per env, normalised obs units: the literature's since SA-PPO (attacks.py)
DEFAULT_EPSILON = attacks.DEFAULT_EPSILON
# SA-PPO: the authors' regulariser weight robust_ppo_reg per method and env, in units of sum_j (dmu_j / sigma_j)^2 = 2 KL
DEFAULT_KAPPA = {"sgld": {"Hopper": 1.0, "Walker2d": 0.1, "HalfCheetah": 0.1, "Ant": 0.003},
                 "convex": {"Hopper": 0.1, "Walker2d": 0.1, "HalfCheetah": 0.1, "Ant": 0.003}}


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    threads: int = 1
    """torch CPU threads; 1 is fastest for 64-sample minibatches (use the second core for a second run)"""
    run_dir: Optional[str] = None
    """where TensorBoard logs and checkpoints go (default: runs/{env_id}__{exp_name}__{seed}__{unix time})"""
    save_every: int = 0
    """also write the checkpoint every N iterations (0: only at the end)"""
    resume: bool = False
    """continue from --run-dir's checkpoint if there is one (a killed run loses at most --save-every iterations)"""

    # Algorithm specific arguments
    env_id: str = "Hopper-v5"
    """the id of the gymnasium environment"""
    total_timesteps: int = 1000000
    """total timesteps of the experiment"""
    learning_rate: float = 3e-4
    """the learning rate of the policy (actor mean and log-std)"""
    value_learning_rate: Optional[float] = None
    """the learning rate of the critic (default: same as --learning-rate)"""
    num_envs: int = 1
    """the number of parallel game environments"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing for policy and value networks"""
    value_first: bool = False
    """the robust-RL authors' PPO (Engstrom et al., 2020): each iteration fits the critic first, for update_epochs over its own
    minibatches, then the policy; the two never share a gradient step (default: CleanRL's joint loss)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper"""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping (0: no clipping, as in the robust-RL authors' PPO)"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold (early stop of the epoch loop)"""
    init_logstd: float = 0.0
    """initial value of the state-independent log-std (HalfCheetah in the literature: log 0.5)"""
    hidden_size: int = 64
    """width of the two tanh hidden layers of actor and critic"""

    # SA-PPO: the state-adversarial regulariser
    epsilon: Optional[float] = None
    """l_inf radius of the regulariser's ball, normalised obs units (default per env: attacks.DEFAULT_EPSILON)"""
    kappa: Optional[float] = None
    """weight of the regulariser, in units of sum_j (dmu_j / sigma_j)^2 = 2 KL (default: the authors' per env and --method)"""
    method: str = "sgld"
    """sgld (the max over the ball from below, by KL-SGLD) or convex (from above, by interval bound propagation)"""
    convex_bound: str = "ibp"
    """convex's bounds: ibp (pure IBP throughout) or mixed (the authors': beta_t IBP + (1 - beta_t) CROWN-IBP, beta_t on epsilon's ramp)"""
    inner_steps: int = 10
    """steps K of the SGLD solver (step size: current epsilon / K)"""
    inner_beta: float = 1e-5
    """SGLD temperature beta in the authors' units (noise relative to the gradient of the minibatch mean)"""
    detach_std: bool = False
    """detach sigma in the regulariser (the authors' robust_ppo_detach_stdev; off: the regulariser also raises sigma)"""
    eps_warmup: float = 0.75
    """epsilon rises linearly, minibatch by minibatch, from 0 to --epsilon over this fraction of the updates (0: no warm-up)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


class NormalizeObservation(gym.wrappers.NormalizeObservation):
    """gymnasium's wrapper, number for number, but faster: it updates its statistics from one observation as a batch of
    one, update(np.array([obs])), whose np.mean and np.var cost most of the wrapper; we pass the same moments directly
    (mean of one sample: itself, variance: 0); equal for every finite observation (a NaN or inf one spoils both).
    tests/test_throughput.py holds it equal to gymnasium's step by step."""

    def observation(self, observation):
        if self._update_running_mean:
            self.obs_rms.update_from_moments(observation, 0.0, 1)
        return np.float32((observation - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon))


class NormalizeReward(gym.wrappers.NormalizeReward):
    """gymnasium's wrapper, number for number, with the same shortcut for its one discounted return per step."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.discounted_reward = self.discounted_reward * self.gamma * (1 - terminated) + float(reward)
        if self._update_running_mean:
            self.return_rms.update_from_moments(self.discounted_reward[0], 0.0, 1)
        return obs, reward / np.sqrt(self.return_rms.var + self.epsilon), terminated, truncated, info


def make_env(env_id, gamma):
    def thunk():
        env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)  # raw returns, before any normalisation
        env = gym.wrappers.ClipAction(env)
        env = NormalizeObservation(env)  # gymnasium's, faster (above)
        env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        env = NormalizeReward(env, gamma=gamma)  # gymnasium's, faster (above)
        env = gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))
        return env

    return thunk


def print_mujoco_warning(text):
    """MuJoCo's warning handler less one message. MuJoCo 4 calls the compiler attribute 'settotalmass' of
    gymnasium's half_cheetah.xml deprecated on every HalfCheetah load (it still applies: same model); we drop
    exactly that message. Any other warning is printed as MuJoCo prints it (to stderr, not MUJOCO_LOG.TXT)."""
    if "settotalmass" not in text:
        print(f"WARNING: {text}", file=sys.stderr, flush=True)


def hms(seconds):
    return f"{int(seconds) // 3600}:{int(seconds) % 3600 // 60:02d}:{int(seconds) % 60:02d}"


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden_size=64, init_logstd=0.0):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), float(init_logstd)))

    def get_value(self, x):
        return self.critic(x)

    def get_policy(self, x):
        """The Gaussian action distribution pi(.|x)."""
        action_mean = self.actor_mean(x)
        action_std = torch.exp(self.actor_logstd.expand_as(action_mean))
        return Normal(action_mean, action_std, validate_args=False)  # argument checks cost ~15% of a rollout step

    def get_action_and_value(self, x, action=None):
        probs = self.get_policy(x)
        if action is None:  # the rollout: sample (the draw of probs.sample(), without its no_grad block); no entropy
            action = torch.normal(probs.loc, probs.scale).detach()
            return action, probs.log_prob(action).sum(1), None, self.critic(x)
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


def clipped_surrogate(newlogprob, oldlogprob, advantages, clip_coef):
    """Per-sample PPO clipped policy loss -min(r·Â, clip(r, 1±c)·Â) with r = exp(newlogprob - oldlogprob)."""
    ratio = (newlogprob - oldlogprob).exp()
    return torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef))


# SA-PPO: the regulariser R_eps(s) = max_{s' in B_eps(s)} sum_j ((mu(s') - mu(s)) / sigma)_j^2, estimated by SGLD or bounded by IBP
def sa_regulariser(agent, obs, eps, method="sgld", steps=10, beta=1e-5, detach_std=False, generator=None, ibp_weight=1.0):
    """Per-sample R_eps(s) as the authors' code computes it, differentiable in the actor (and in sigma unless detach_std).
    sgld: s' = attacks.mad(s) (detached), R = sum_j ((mu(s') - sg[mu(s)]) / sigma)_j^2, a lower bound of the max.
    convex: [l, u] = bounds of mu over the ball, R = sum_j max(|u - mu(s)|, |l - mu(s)|)_j^2 / sigma_j^2, an upper bound;
    the bounds are ibp_weight * IBP + (1 - ibp_weight) * CROWN-IBP (the authors' mix; 1: pure IBP).
    beta is the authors': their noise is relative to the gradient of the minibatch mean, attacks.mad's to that of the sum."""
    sigma = agent.actor_logstd.detach().exp() if detach_std else agent.actor_logstd.exp()
    if method == "sgld":
        obs_adv = attacks.mad(agent, obs, eps, steps=steps, beta=beta * len(obs) ** 2, generator=generator)
        with torch.no_grad():
            mu_clean = agent.actor_mean(obs)
        return (((agent.actor_mean(obs_adv) - mu_clean) / sigma) ** 2).sum(1)
    mu = agent.actor_mean(obs)
    lower, upper = attacks.interval_bounds(agent.actor_mean, obs, eps)
    if ibp_weight < 1:
        crown_lower, crown_upper = attacks.crown_ibp_bounds(agent.actor_mean, obs, eps)
        lower = ibp_weight * lower + (1 - ibp_weight) * crown_lower
        upper = ibp_weight * upper + (1 - ibp_weight) * crown_upper
    return ((torch.max((upper - mu).abs(), (lower - mu).abs()) / sigma) ** 2).sum(1)


def value_loss(newvalue, returns, oldvalues, clip_coef, clip_vloss):
    """CleanRL's critic loss: 0.5 * mean squared error to the returns, with the value change clipped to ±clip_coef if clip_vloss."""
    if not clip_vloss:
        return 0.5 * ((newvalue - returns) ** 2).mean()
    v_loss_unclipped = (newvalue - returns) ** 2
    v_clipped = oldvalues + torch.clamp(newvalue - oldvalues, -clip_coef, clip_coef)
    v_loss_clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()


def policy_diagnostics(agent, obs):
    """How much the mean action depends on the state, over a batch of states: the spread (std over the batch of mu(s),
    averaged over action dimensions) and the input sensitivity (mean over the batch of the Frobenius norm of the
    Jacobian d mu / d s). A policy that collapses to one action whatever it sees has both near 0."""
    x = obs.detach().requires_grad_(True)
    with torch.enable_grad():
        mu = agent.actor_mean(x)
        rows = [torch.autograd.grad(mu[:, j].sum(), x, retain_graph=True)[0] for j in range(mu.shape[1])]
    jacobian_norm = torch.stack(rows, 1).pow(2).sum((1, 2)).sqrt()
    return mu.detach().std(0).mean().item(), jacobian_norm.mean().item()


def merged_rms(envs, name):
    """Running statistics `name` (obs_rms or return_rms) of the sub-envs' normalisers, merged if num_envs > 1.
    The observation statistics are part of the agent: evaluation must normalise with them."""
    rms = envs.envs[0].get_wrapper_attr(name)
    mean, var, count = rms.mean.copy(), rms.var.copy(), float(rms.count)
    for env in envs.envs[1:]:  # parallel-variance merge (Chan et al.)
        other = env.get_wrapper_attr(name)
        delta, total = other.mean - mean, count + other.count
        var = (var * count + other.var * other.count + delta**2 * count * other.count / total) / total
        mean, count = mean + delta * other.count / total, total
    return {"mean": torch.as_tensor(mean), "var": torch.as_tensor(var), "count": count}


def save_checkpoint(path, agent, optimizer, envs, args, global_step, iteration):
    """Self-describing checkpoint; written to a temporary file first so a crash never leaves half a file."""
    checkpoint = {
        "algo": "sappo",
        "env_id": args.env_id,
        "obs_shape": list(envs.single_observation_space.shape),
        "action_shape": list(envs.single_action_space.shape),
        "hidden_size": args.hidden_size,
        "script": os.path.basename(__file__),  # evaluation and the learned attacks rebuild the network with this script's Agent
        "script_path": os.path.abspath(__file__),  # (found there if the repository has no script of that name)
        "network": repr(agent),  # its layers and activations: a later change to Agent is refused, never loaded silently
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "obs_rms": merged_rms(envs, "obs_rms"),
        "return_rms": merged_rms(envs, "return_rms"),  # only needed to resume training
        "obs_clip": 10.0,
        "args": vars(args),
        "global_step": global_step,
        "iteration": iteration,
        "versions": {
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "gymnasium": gym.__version__,
            "mujoco": mujoco.__version__,
            "numpy": np.__version__,
        },
    }
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


def read_checkpoint(path):
    """The checkpoint --resume continues from. A file that is not one (truncated, foreign, an exported agent without
    optimiser state) is one clear error line, before anything in the run directory is touched."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}); cannot resume it")
    if not isinstance(checkpoint, dict):
        raise SystemExit(f"error: {path} is not a checkpoint of a training script (it holds a {type(checkpoint).__name__}); cannot resume it")
    missing = sorted({"algo", "args", "agent", "optimizer", "obs_rms", "return_rms", "global_step", "iteration"} - set(checkpoint))
    if missing or not isinstance(checkpoint["args"], dict):
        raise SystemExit(f"error: {path} is not a checkpoint of a training script (missing {missing or ['args']}); cannot resume it")
    return checkpoint


if __name__ == "__main__":
    args = tyro.cli(Args)
    mujoco.set_mju_user_warning(print_mujoco_warning)
    try:
        probe = gym.make(args.env_id)
    except gym.error.Error as e:
        raise SystemExit(f"error: unknown --env-id {args.env_id!r}: {e}")
    if not isinstance(probe.action_space, gym.spaces.Box):
        raise SystemExit(f"error: {args.env_id} has no continuous (Box) action space")
    probe.close()
    if min(args.total_timesteps, args.num_steps, args.num_envs, args.num_minibatches, args.update_epochs, args.threads) < 1:
        raise SystemExit("error: --total-timesteps, --num-steps, --num-envs, --num-minibatches, --update-epochs, --threads must be >= 1")
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = max(1, args.total_timesteps // args.batch_size)
    if args.batch_size % args.num_minibatches != 0:
        raise SystemExit(f"error: --num-minibatches must divide the batch (num_envs * num_steps = {args.batch_size})")
    if not args.max_grad_norm >= 0:
        raise SystemExit(f"error: --max-grad-norm must be >= 0 (0: no clipping), got {args.max_grad_norm}")
    for flag, value, ok, what in (  # nan fails every comparison
        ("--learning-rate", args.learning_rate, 0 < args.learning_rate < np.inf, "a finite number > 0"),
        ("--value-learning-rate", args.value_learning_rate, args.value_learning_rate is None or 0 < args.value_learning_rate < np.inf, "a finite number > 0"),
        ("--gamma", args.gamma, 0 <= args.gamma <= 1, "in [0, 1]"),
        ("--gae-lambda", args.gae_lambda, 0 <= args.gae_lambda <= 1, "in [0, 1]"),
        ("--clip-coef", args.clip_coef, 0 < args.clip_coef < np.inf, "a finite number > 0"),
        ("--ent-coef", args.ent_coef, 0 <= args.ent_coef < np.inf, "a finite number >= 0"),
        ("--vf-coef", args.vf_coef, 0 <= args.vf_coef < np.inf, "a finite number >= 0"),
        ("--target-kl", args.target_kl, args.target_kl is None or 0 < args.target_kl < np.inf, "a finite number > 0"),
        ("--init-logstd", args.init_logstd, np.isfinite(args.init_logstd), "finite"),
        ("--hidden-size", args.hidden_size, args.hidden_size >= 1, ">= 1"),
        ("--save-every", args.save_every, args.save_every >= 0, ">= 0"),
    ):
        if not ok:
            raise SystemExit(f"error: {flag} must be {what}, got {value}")
    if args.resume and args.run_dir is None:
        raise SystemExit("error: --resume needs the --run-dir of the run to continue")
    # SA-PPO: validate the regulariser's flags; epsilon and kappa default per env (kappa also per --method)
    if args.method not in DEFAULT_KAPPA:
        raise SystemExit(f"error: --method must be sgld or convex, got {args.method!r}")
    if args.convex_bound not in ("ibp", "mixed"):
        raise SystemExit(f"error: --convex-bound must be ibp or mixed, got {args.convex_bound!r}")
    if args.convex_bound != "ibp" and args.method != "convex":
        raise SystemExit(f"error: --convex-bound {args.convex_bound} bounds --method convex; --method is {args.method}")
    family = next((prefix for prefix in DEFAULT_EPSILON if args.env_id.startswith(prefix)), None)
    if family is None and (args.epsilon is None or args.kappa is None):
        raise SystemExit(f"error: no default --epsilon / --kappa for {args.env_id}; pass both")
    args.epsilon = DEFAULT_EPSILON[family] if args.epsilon is None else args.epsilon
    args.kappa = DEFAULT_KAPPA[args.method][family] if args.kappa is None else args.kappa
    if not (0 <= args.epsilon <= 10 and 0 <= args.kappa < np.inf):  # within the observation clip (±10); nan fails
        raise SystemExit(f"error: --epsilon must be in [0, 10] (the observation clip) and --kappa a finite number >= 0, got {args.epsilon} and {args.kappa}")
    if args.inner_steps < 1 or not 0 <= args.eps_warmup <= 1:
        raise SystemExit("error: --inner-steps must be >= 1 and --eps-warmup in [0, 1]")
    if not args.inner_beta >= 0:
        raise SystemExit(f"error: --inner-beta must be >= 0, got {args.inner_beta}")
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = args.run_dir or os.path.join("runs", run_name)
    ckpt_path = os.path.join(run_dir, "agent.pt")
    if os.path.exists(ckpt_path) and not args.resume:
        raise SystemExit(f"error: {ckpt_path} already exists; choose another --run-dir (or --resume)")
    checkpoint = read_checkpoint(ckpt_path) if args.resume and os.path.exists(ckpt_path) else None
    if checkpoint is None and os.path.isdir(run_dir) and any(f.startswith("events.out.tfevents.") for f in os.listdir(run_dir)):
        if not args.resume:  # the logs of a start that never wrote a checkpoint are never mixed with this run's
            raise SystemExit(f"error: {run_dir} holds the logs of an earlier start but no checkpoint; choose another --run-dir (or --resume to start over there)")
        print(f"{run_dir} holds the logs of an earlier start but no checkpoint: starting over (its earlier logs are superseded)", flush=True)
    # every start marks its first step in the logs (TensorBoard's restart marker): whatever an earlier start logged from
    # that step on (after the checkpoint this start continues, or all of it) is superseded, in TensorBoard and in
    # benchmark.py's export alike, so the logs read as the one run that the checkpoint holds
    writer = SummaryWriter(run_dir, purge_step=1 + (checkpoint["global_step"] if checkpoint is not None else 0))
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)

    # env setup (SAME_STEP: a done step returns the next episode's first obs, no fake transition)
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.gamma) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))

    agent = Agent(obs_dim, act_dim, args.hidden_size, args.init_logstd)
    value_lr = args.value_learning_rate if args.value_learning_rate is not None else args.learning_rate
    optimizer = optim.Adam(
        [
            {"params": list(agent.actor_mean.parameters()) + [agent.actor_logstd], "lr": args.learning_rate},
            {"params": agent.critic.parameters(), "lr": value_lr},
        ],
        eps=1e-5,
        fused=True,  # one kernel for all parameters: ~20% faster updates on CPU, same algorithm
    )
    initial_lrs = [args.learning_rate, value_lr]

    # ALGO Logic: Storage setup (numpy buffers; the rollout runs under torch.inference_mode)
    obs = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions = np.zeros((args.num_steps, args.num_envs, act_dim), dtype=np.float32)
    logprobs = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    values = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    # Resume: weights, optimizer, normalisers and counters from the last checkpoint of the same run (same
    # algorithm and arguments); the episode in flight is lost (envs restart) and the random streams are
    # reseeded from (seed, iteration), so a resumed run is reproducible but not bit-identical to an
    # uninterrupted one.
    start_iteration, global_step = 1, 0
    if checkpoint is not None:
        ignored = {"run_dir", "resume", "save_every", "threads"}
        defaults = vars(Args())  # a flag added after the checkpoint was written counts as at its default
        changed = sorted(k for k, v in vars(args).items() if k not in ignored and checkpoint["args"].get(k, defaults[k]) != v)
        if checkpoint["algo"] != "sappo" or changed:
            raise SystemExit(f"error: {ckpt_path} is a {checkpoint['algo']} run with other arguments ({', '.join(changed)}); cannot resume it")
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for env in envs.envs:
            for name in ("obs_rms", "return_rms"):
                rms, saved = env.get_wrapper_attr(name), checkpoint[name]
                rms.mean, rms.var = saved["mean"].numpy().copy(), saved["var"].numpy().copy()
                rms.count = saved["count"] / args.num_envs  # the saved count is the merge over all sub-envs
        start_iteration, global_step = checkpoint["iteration"] + 1, checkpoint["global_step"]
        if start_iteration > args.num_iterations:
            print(f"{ckpt_path} is complete ({global_step} steps); nothing to resume")
            raise SystemExit(0)
        random.seed(args.seed * 100_003 + start_iteration)  # not the stream of another seed
        np.random.seed(args.seed * 100_003 + start_iteration)
        torch.manual_seed(args.seed * 100_003 + start_iteration)
        print(f"resuming {ckpt_path} at iteration {start_iteration}/{args.num_iterations}", flush=True)

    # SA-PPO: the SGLD solver's own random stream (not the actions'), so that at kappa = 0 this is spo_ppo.py's run
    adversary_rng = torch.Generator().manual_seed(args.seed if start_iteration == 1 else args.seed * 100_003 + start_iteration)

    # TRY NOT TO MODIFY: start the game
    start_step, start_time = global_step, time.time()
    next_obs, _ = envs.reset(seed=args.seed if start_iteration == 1 else args.seed * 100_003 + start_iteration)
    next_obs = next_obs.astype(np.float32)
    next_done = np.zeros(args.num_envs, dtype=np.float32)
    recent_returns = []

    for iteration in range(start_iteration, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            for group, lr in zip(optimizer.param_groups, initial_lrs):
                group["lr"] = frac * lr

        with torch.inference_mode():
            for step in range(0, args.num_steps):
                global_step += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                action, logprob, _, value = agent.get_action_and_value(torch.from_numpy(next_obs))
                values[step] = value.flatten().numpy()
                actions[step] = action.numpy()
                logprobs[step] = logprob.numpy()

                next_obs, reward, terminations, truncations, infos = envs.step(actions[step])
                next_obs = next_obs.astype(np.float32)
                next_done = np.logical_or(terminations, truncations).astype(np.float32)
                rewards[step] = reward

                if "final_info" in infos:
                    finished = infos["final_info"]["_episode"]
                    for r, l in zip(infos["final_info"]["episode"]["r"][finished], infos["final_info"]["episode"]["l"][finished]):
                        writer.add_scalar("charts/episodic_return", r, global_step)
                        writer.add_scalar("charts/episodic_length", l, global_step)
                        recent_returns = (recent_returns + [float(r)])[-10:]

            # bootstrap value if not done
            next_value = agent.get_value(torch.from_numpy(next_obs)).flatten().numpy()
        advantages = np.zeros_like(rewards)
        lastgaelam = 0
        for t in reversed(range(args.num_steps)):
            if t == args.num_steps - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - dones[t + 1]
                nextvalues = values[t + 1]
            delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
            advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
        returns = advantages + values

        # flatten the batch
        b_obs = torch.from_numpy(obs.reshape(-1, obs_dim))
        b_logprobs = torch.from_numpy(logprobs.reshape(-1))
        b_actions = torch.from_numpy(actions.reshape(-1, act_dim))
        b_advantages = torch.from_numpy(advantages.reshape(-1))
        b_returns = torch.from_numpy(returns.reshape(-1))
        b_values = torch.from_numpy(values.reshape(-1))

        # Optimizing the policy and value network
        b_inds = np.arange(args.batch_size)
        params = list(agent.parameters())  # for the gradient clipping: listed once, not on each of the 320 minibatches
        clipfracs = []
        if args.value_first:  # the authors' PPO: fit the critic first, on its own shuffled minibatches
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    mb_inds = torch.from_numpy(b_inds[start : start + args.minibatch_size])
                    newvalue = agent.get_value(b_obs[mb_inds]).view(-1)
                    v_loss = value_loss(newvalue, b_returns[mb_inds], b_values[mb_inds], args.clip_coef, args.clip_vloss)
                    optimizer.zero_grad()  # grads become None: Adam steps only the critic's group (as a second optimiser would)
                    v_loss.backward()
                    if args.max_grad_norm > 0:
                        nn.utils.clip_grad_norm_(agent.critic.parameters(), args.max_grad_norm, foreach=True)
                    optimizer.step()
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = torch.from_numpy(b_inds[start:end])  # one index tensor, not a conversion per buffer it selects from
                mb_obs = b_obs[mb_inds]

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb_obs, b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # SA-PPO: the authors' epsilon ramp, linear in the number of minibatches over the first eps_warmup of the updates
                progress = iteration - 1 + (epoch * args.num_minibatches + start // args.minibatch_size) / (args.update_epochs * args.num_minibatches)
                ramp = min(1.0, progress / (args.eps_warmup * args.num_iterations)) if args.eps_warmup > 0 else 1.0
                eps_t = args.epsilon * ramp
                ibp_weight = ramp if args.convex_bound == "mixed" else 1.0  # SA-PPO: the authors' beta_t, on epsilon's ramp
                sa_reg = sa_regulariser(agent, mb_obs, eps_t, args.method, args.inner_steps, args.inner_beta, args.detach_std, adversary_rng,
                                        ibp_weight).mean()

                # Policy loss
                # SA-PPO: the PPO clipped loss + kappa * the regulariser (the critic's loss is SPO's)
                pg_loss_clean = clipped_surrogate(newlogprob, b_logprobs[mb_inds], mb_advantages, args.clip_coef).mean()
                pg_loss = pg_loss_clean + args.kappa * sa_reg

                # Value loss
                v_loss = value_loss(newvalue.view(-1), b_returns[mb_inds], b_values[mb_inds], args.clip_coef, args.clip_vloss)

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss
                if not args.value_first:  # CleanRL: one loss for both networks (--value-first fitted the critic above)
                    loss = loss + v_loss * args.vf_coef
                if not math.isfinite(loss.item()):
                    raise SystemExit(f"error: non-finite loss at iteration {iteration}; stopping without writing a checkpoint")

                optimizer.zero_grad()
                loss.backward()
                if args.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        action_spread, input_sensitivity = policy_diagnostics(agent, b_obs)  # after the last update: collapse shows here

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        elapsed = time.time() - start_time
        sps = int((global_step - start_step) / elapsed)
        eta = elapsed / (iteration - start_iteration + 1) * (args.num_iterations - iteration)
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        writer.add_scalar("policy/action_spread", action_spread, global_step)
        writer.add_scalar("policy/input_sensitivity", input_sensitivity, global_step)
        # SA-PPO: the regulariser (last minibatch) against sum_j (dmu_j / sigma_j)^2 under uniform noise of the same size
        reg_random = 2 * attacks.kl_divergence(agent, mb_obs, attacks.random(agent, mb_obs, eps_t, generator=adversary_rng)).mean().item()
        writer.add_scalar("adversary/epsilon", eps_t, global_step)
        writer.add_scalar("adversary/regulariser", sa_reg.item(), global_step)
        writer.add_scalar("adversary/regulariser_random", reg_random, global_step)
        writer.add_scalar("losses/policy_loss_clean", pg_loss_clean.item(), global_step)
        recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
        print(f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} elapsed {hms(elapsed)} ETA {hms(eta)} return(last 10) {recent} spread {action_spread:.3f} |dmu/ds| {input_sensitivity:.3f} eps {eps_t:.4f} R/random {sa_reg.item():.2e}/{reg_random:.2e}", flush=True)

        if args.save_every > 0 and iteration % args.save_every == 0:
            save_checkpoint(ckpt_path, agent, optimizer, envs, args, global_step, iteration)

    save_checkpoint(ckpt_path, agent, optimizer, envs, args, global_step, args.num_iterations)
    print(f"saved {ckpt_path}")
    envs.close()
    writer.close()
