"""WocaR-PPO: worst-case-aware robust PPO (CleanRL style, gymnasium 1.x).

Objective (Liang et al., "Efficient Adversarial Training without Attacking: Worst-Case-Aware Robust Reinforcement
Learning", NeurIPS 2022): learn, without attacking, the worst-attack action value Q̲ (the return when an observation
attacker makes μ_θ output the worst action it can, every step), raise the advantage by it, add SA-PPO's regulariser:

    Q̲(s, a) = r + γ E_{s'}[ min_{a' ∈ [l, u](s')} Q̲(s', a') ],   [l, u](s') = IBP box of μ_θ over B_ε_wq(s')
    min_θ  L_clip(θ; Â + κ_w · norm Q̲(s, a)) − c_H·H + κ · E_s max_{ŝ ∈ B_ε(s)} Σ_j ((μ_θ(ŝ) − μ_θ(s)) / σ_j)²

Pseudocode, one iteration:
    roll out num_steps with π_θ on the clean states, store (s, a, log π_old(a|s), r, done, V(s))
    compute GAE advantages Â and returns
    for q_epochs: for each minibatch of transitions (s, a, r, s', done):                             # WocaR: Q̲ update
        a_w = wq_steps sign-gradient descent steps on Q_φ(s', ·) from μ_θ(s'), of size (u − l)/wq_steps, in [l, u](s')
        one Adam step on mean (Q_φ(s, a) − y)²,  y = r + γ (1 − done) Q_φ⁻(s', a_w) (no gradient);  φ⁻ ← (1 − τ)φ⁻ + τφ
    κ_w = q_weight · n/N (linear), (q_weight · n/N)³ (exp), ..., capped at 1;  n = iteration − 1             # WocaR
    for update_epochs: for each minibatch, j = 0, 1, ..., M − 1 (M = update_epochs · num_minibatches):
        Â ← norm(Â) + κ_w · norm(Q_φ⁻(s, a))   (both per minibatch; the target net at the sampled action)       # WocaR
        ε_t = ε · min(1, (iteration − 1 + j/M) / (eps_warmup · num_iterations))                      # SA-PPO's ε ramp
        ŝ = attacks.mad(s; θ, ε_t) (KL-SGLD, held fixed),  R = Σ_j ((μ(ŝ) − sg[μ(s)]) / σ_j)²                   # SA-PPO
        L = L_clip(s) + κ · mean_i R_i − ent_coef·H + vf_coef·L_V                                        # WocaR
        L_clip(x) = mean_i max(-r_i(x)Â_i, -clip(r_i(x), 1±clip_coef)Â_i),  r_i(x) = π_θ(a_i|x)/π_old(a_i|s_i)
        one Adam step on L
Old log-probs come from the clean state and the critic trains on clean states; untagged lines are spo_ppo.py's, and
κ = q_weight = 0 repeats spo_ppo.py's run exactly.

Flags that matter: --q-weight, --q-weight-schedule, --kappa, --epsilon, --q-lr, --wq-eps. Defaults per env are the
authors' (and the ε ramp over 75% of the updates: 732 of 976 iterations, Ant 3662 of 4882):
    Hopper ε 0.075, κ 0.1, q_weight 0.8 linear;  Walker2d ε 0.05, κ 0.1, q_weight 0.8 exp (it ends at 0.512);
    HalfCheetah ε 0.15, κ 0.1, q_weight 0.5 linear;  Ant ε 0.15, κ 0.003, q_weight 0.8 linear, q_lr 3e-5 (else 4e-4).

Reconstruction from umd-huang-lab/WocaR-RL at 2856174, WocaR-PPO/src/: policy_gradients/steps.py (worst_q_step,
robust_q_ppo_step, surrogate_adv_q, get_state_kl_bound_sgld), pgd_act.py, ibp.py, agent.py, config_{hopper,walker,
halfcheetah}_robust_q_ppo_sgld.json, config_ant_robust_q_ppo.json (MLP policies, not the LSTM configs of 2023-09-13).
  * Kept: ε_wq = 0.01 fixed, not the attack budget (--wq-eps); a time limit ends a transition (as in our GAE); Walker2d's
    exp schedule; σ not detached in R, so R also raises σ (--detach-std); the ε ramp per minibatch (auto_LiRPA's
    LinearScheduler); their SGLD noise, relative to the gradient of the minibatch mean (attacks.mad: the sum; β·|B|²).
  * Fixed (no flag): their network_bounds walks the modules in registration order, Tanh first, so their box is tanh(box)
    through three Linear layers, not a bound of μ; we use correct IBP (attacks.interval_bounds).
  * Not in their code (their issue #5): the paper's state importance w(s) on R; --state-importance (off) is our reading,
    w(s) ∝ max_a Q_φ⁻(s, a) − min_a Q_φ⁻(s, a) over the action box (the same search both ways), batch mean 1.
Around these terms the PPO is spo_ppo.py's, not theirs (value net stepped first, no gradient clipping).
"""
import copy  # WocaR: the target Q network starts as a copy
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


# WocaR: default l_inf radius per env, normalised obs units: the literature's since SA-PPO (attacks.py)
DEFAULT_EPSILON = attacks.DEFAULT_EPSILON
# WocaR: the authors' other per-env settings: robust_ppo_reg (units of sum_j (dmu_j / sigma_j)^2 = 2 KL), q_weight, weight_schedule, q_lr
DEFAULT_WOCAR = {
    "Hopper": {"kappa": 0.1, "q_weight": 0.8, "q_weight_schedule": "linear", "q_lr": 4e-4},
    "Walker2d": {"kappa": 0.1, "q_weight": 0.8, "q_weight_schedule": "exp", "q_lr": 4e-4},
    "HalfCheetah": {"kappa": 0.1, "q_weight": 0.5, "q_weight_schedule": "linear", "q_lr": 4e-4},
    "Ant": {"kappa": 0.003, "q_weight": 0.8, "q_weight_schedule": "linear", "q_lr": 3e-5},
}


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

    # WocaR: the worst-attack Q network, the worst-case-aware advantage and SA-PPO's regulariser
    q_weight: Optional[float] = None
    """scale of kappa_w, the weight of the normalised worst-attack Q in the advantage (default per env: 0.8, HalfCheetah 0.5)"""
    q_weight_schedule: Optional[str] = None
    """kappa_w over the updates: linear, exp, constant, stage or stage-linear (default per env: linear, Walker2d exp)"""
    q_lr: Optional[float] = None
    """learning rate of the Q network, annealed like the others (default per env: 4e-4, Ant 3e-5)"""
    q_epochs: int = 10
    """epochs of Q updates per iteration, num_minibatches minibatches each"""
    q_tau: float = 1e-3
    """rate of the target Q network's soft update, after every Q minibatch"""
    wq_eps: float = 0.01
    """l_inf radius of the observation ball whose IBP action box the Q target's worst action is searched in"""
    wq_steps: int = 50
    """sign-gradient descent steps of the worst-action search"""
    epsilon: Optional[float] = None
    """l_inf radius of the regulariser's ball, normalised obs units (default per env: attacks.DEFAULT_EPSILON)"""
    kappa: Optional[float] = None
    """weight of SA-PPO's SGLD regulariser, units of sum_j (dmu_j / sigma_j)^2 = 2 KL (default per env: 0.1, Ant 0.003)"""
    inner_steps: int = 10
    """steps K of the SGLD solver (step size: current epsilon / K)"""
    inner_beta: float = 1e-5
    """SGLD temperature beta in the authors' units (noise relative to the gradient of the minibatch mean)"""
    detach_std: bool = False
    """detach sigma in the regulariser (the authors' robust_ppo_detach_stdev; off: the regulariser also raises sigma)"""
    eps_warmup: float = 0.75
    """epsilon rises linearly, minibatch by minibatch, from 0 to --epsilon over this fraction of the updates (0: no warm-up)"""
    state_importance: bool = False
    """weight the regulariser by the state importance w(s) (our reading of the paper; not in the authors' code)"""

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


# WocaR: the worst-action search, the worst-attack Bellman update, the kappa_w schedule and SA-PPO's regulariser
def worst_action(q_net, obs, start, low, high, steps=50, maximise=False):
    """argmin_{a in [low, high]} Q(obs, a) (argmax if maximise) by the authors' worst_action_pgd: `steps` sign-gradient steps of
    size (high - low) / steps from `start`, projected onto the box; grad_a Q by hand as in attacks.mlp_input_grad."""
    first, hidden, last = q_net[0], q_net[2], q_net[4]
    with torch.inference_mode():  # not even no_grad's bookkeeping: the search is never differentiated (6% faster)
        pre = torch.addmm(first.bias, obs, first.weight[:, : obs.shape[1]].T)  # the state's share, fixed during the search
        w_act, w_hid, w_out = first.weight[:, obs.shape[1] :], hidden.weight, last.weight.expand(len(obs), -1)
        w_act_t, w_hid_t = w_act.T, w_hid.T
        step, a = (high - low) / steps * (1.0 if maximise else -1.0), start
        for _ in range(steps):
            h1 = torch.tanh(torch.addmm(pre, a, w_act_t))
            h2 = torch.tanh(torch.addmm(hidden.bias, h1, w_hid_t))
            g = torch.ops.aten.tanh_backward(torch.ops.aten.tanh_backward(w_out, h2) @ w_hid, h1) @ w_act  # dQ/da
            a = torch.clamp(torch.addcmul(a, step, g.sign()), low, high)
    return a


def worst_attack_q_update(q_net, q_target, q_optimizer, actor_mean, obs, actions, rewards, next_obs, next_nonterminal, gamma, eps, steps, tau):
    """The authors' worst_q_step on one minibatch: a_w = worst_action(Q, s', mu(s'), IBP box of mu over B_eps(s')), one step on
    mean (Q(s, a) - y)^2 with y = r + gamma (1 - done) Q_target(s', a_w) (no gradient), Q_target <- (1 - tau) Q_target + tau Q."""
    with torch.no_grad():
        a_worst = worst_action(q_net, next_obs, actor_mean(next_obs), *attacks.interval_bounds(actor_mean, next_obs, eps), steps)
        target = rewards + gamma * next_nonterminal * q_target(torch.cat([next_obs, a_worst], 1)).view(-1)
    q_loss = ((q_net(torch.cat([obs, actions], 1)).view(-1) - target) ** 2).mean()
    q_optimizer.zero_grad()
    q_loss.backward()
    q_optimizer.step()
    with torch.no_grad():
        for p_target, p in zip(q_target.parameters(), q_net.parameters()):
            p_target.lerp_(p, tau)
    return q_loss, a_worst


def q_weight_at(schedule, q_weight, n, num_iterations):
    """kappa_w at update n (0-based) of num_iterations as the authors' robust_q_ppo_step schedules it, capped at 1."""
    frac = n / num_iterations
    return min(1.0, {"linear": q_weight * frac, "exp": (q_weight * frac) ** 3, "constant": q_weight,
                     "stage": q_weight if n >= num_iterations / 2 else 0.0, "stage-linear": min(q_weight, 0.8 * frac)}[schedule])


def sgld_regulariser(agent, obs, eps, steps=10, beta=1e-5, detach_std=False, generator=None):
    """SA-PPO's per-sample R(s) = sum_j ((mu(s') - sg[mu(s)]) / sigma)_j^2 at s' = attacks.mad(s), held fixed; sigma detached
    if asked. beta is the authors' (noise relative to the gradient of the minibatch mean; attacks.mad's: the sum's)."""
    sigma = agent.actor_logstd.detach().exp() if detach_std else agent.actor_logstd.exp()
    obs_adv = attacks.mad(agent, obs, eps, steps=steps, beta=beta * len(obs) ** 2, generator=generator)
    with torch.no_grad():
        mu_clean = agent.actor_mean(obs)
    return (((agent.actor_mean(obs_adv) - mu_clean) / sigma) ** 2).sum(1)


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


def save_checkpoint(path, agent, optimizer, envs, args, global_step, iteration, extra=None):  # WocaR: extra = the Q networks
    """Self-describing checkpoint; written to a temporary file first so a crash never leaves half a file."""
    checkpoint = {
        "algo": "wocar",
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
    checkpoint.update(extra or {})  # WocaR: the worst-attack Q network, its target and optimiser (for --resume)
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
    # WocaR: validate the flags; epsilon, kappa, q_weight, its schedule and q_lr default per env (the authors' configs)
    family = next((prefix for prefix in DEFAULT_EPSILON if args.env_id.startswith(prefix)), None)
    for name in ("epsilon", "kappa", "q_weight", "q_weight_schedule", "q_lr"):
        if getattr(args, name) is None and family is None:
            raise SystemExit(f"error: no default --{name.replace('_', '-')} for {args.env_id}; pass one")
        if getattr(args, name) is None:
            setattr(args, name, DEFAULT_EPSILON[family] if name == "epsilon" else DEFAULT_WOCAR[family][name])
    if args.q_weight_schedule not in ("linear", "exp", "constant", "stage", "stage-linear"):
        raise SystemExit(f"error: --q-weight-schedule must be linear, exp, constant, stage or stage-linear, got {args.q_weight_schedule!r}")
    if not (0 <= args.epsilon <= 10 and 0 <= args.wq_eps <= 10):  # within the observation clip (±10); nan fails
        raise SystemExit(f"error: --epsilon and --wq-eps must be in [0, 10] (the observation clip), got {args.epsilon} and {args.wq_eps}")
    if not (all(0 <= v < np.inf for v in (args.kappa, args.q_weight, args.inner_beta)) and 0 < args.q_lr < np.inf and 0 < args.q_tau <= 1):
        raise SystemExit("error: --kappa, --q-weight, --inner-beta must be finite numbers >= 0, --q-lr a finite number > 0 and --q-tau in (0, 1]")
    if min(args.q_epochs, args.wq_steps, args.inner_steps) < 1 or not 0 <= args.eps_warmup <= 1:
        raise SystemExit("error: --q-epochs, --wq-steps and --inner-steps must be >= 1 and --eps-warmup in [0, 1]")
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
    # WocaR: the worst-attack Q_phi(s, a), critic-shaped on concat(s, a), and its target; a forked generator keeps spo_ppo.py's stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        q_net = nn.Sequential(layer_init(nn.Linear(obs_dim + act_dim, args.hidden_size)), nn.Tanh(), layer_init(nn.Linear(args.hidden_size, args.hidden_size)),
                              nn.Tanh(), layer_init(nn.Linear(args.hidden_size, 1), std=1.0))
    q_target = copy.deepcopy(q_net).requires_grad_(False)
    q_optimizer = optim.Adam(q_net.parameters(), lr=args.q_lr, eps=1e-5, fused=True)
    q_state = lambda: {"q_net": q_net.state_dict(), "q_target": q_target.state_dict(), "q_optimizer": q_optimizer.state_dict()}

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
        if checkpoint["algo"] != "wocar" or changed:
            raise SystemExit(f"error: {ckpt_path} is a {checkpoint['algo']} run with other arguments ({', '.join(changed)}); cannot resume it")
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for name, module in (("q_net", q_net), ("q_target", q_target), ("q_optimizer", q_optimizer)):  # WocaR: the Q networks resume too
            module.load_state_dict(checkpoint[name])
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
    # WocaR: the SGLD's and the Q minibatches' own random stream, so that at kappa = q_weight = 0 this is spo_ppo.py's run
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
            q_optimizer.param_groups[0]["lr"] = frac * args.q_lr  # WocaR: the Q network's rate anneals too
        kappa_w = q_weight_at(args.q_weight_schedule, args.q_weight, iteration - 1, args.num_iterations)  # WocaR: this update's worst-case weight

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

        # WocaR: train the worst-attack Q on this batch before the policy epochs (the actor is still the rollout's);
        # transition t leads to the stored s_{t+1} (the bootstrap obs after the last step); a done (time limit too) ends it
        b_rewards = torch.from_numpy(rewards.reshape(-1))
        b_next_obs = torch.from_numpy(np.concatenate([obs[1:], next_obs[None]]).reshape(-1, obs_dim))
        b_next_nonterminal = torch.from_numpy(1.0 - np.concatenate([dones[1:], next_done[None]]).reshape(-1))
        for q_epoch in range(args.q_epochs):
            q_perm = torch.randperm(args.batch_size, generator=adversary_rng)
            for q_start in range(0, args.batch_size, args.minibatch_size):
                q_inds = q_perm[q_start : q_start + args.minibatch_size]
                q_loss, _ = worst_attack_q_update(q_net, q_target, q_optimizer, agent.actor_mean, b_obs[q_inds], b_actions[q_inds], b_rewards[q_inds],
                                                  b_next_obs[q_inds], b_next_nonterminal[q_inds], args.gamma, args.wq_eps, args.wq_steps, args.q_tau)
        with torch.no_grad():  # the target Q at the sampled actions, fixed during the policy epochs; and w(s)
            b_qw = q_target(torch.cat([b_obs, b_actions], 1)).view(-1)
            b_importance = torch.ones(args.batch_size)
            if args.state_importance:  # w(s) = max_a Q- - min_a Q- over the env's action box, scaled to mean 1 over the batch
                box = [torch.as_tensor(b) for b in (envs.envs[0].unwrapped.action_space.low, envs.envs[0].unwrapped.action_space.high)]
                mu = torch.clamp(agent.actor_mean(b_obs), *box)
                q_max, q_min = (q_target(torch.cat([b_obs, worst_action(q_target, b_obs, mu, *box, args.wq_steps, maximise=m)], 1)).view(-1) for m in (True, False))
                spread = torch.clamp(q_max - q_min, min=0)  # both searches are local: they could, rarely, cross
                b_importance = spread / (spread.mean() + 1e-8)

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
                # WocaR: the worst-case-aware advantage A + kappa_w Q-(s, a), Q- normalised per minibatch like A
                mb_qw = b_qw[mb_inds]
                mb_advantages = mb_advantages + kappa_w * ((mb_qw - mb_qw.mean()) / (mb_qw.std() + 1e-8) if args.norm_adv else mb_qw)
                # WocaR: SA-PPO's SGLD regulariser, epsilon on the authors' ramp, linear in the number of minibatches
                progress = iteration - 1 + (epoch * args.num_minibatches + start // args.minibatch_size) / (args.update_epochs * args.num_minibatches)
                eps_t = args.epsilon * (min(1.0, progress / (args.eps_warmup * args.num_iterations)) if args.eps_warmup > 0 else 1.0)
                sa_reg = (b_importance[mb_inds] * sgld_regulariser(agent, mb_obs, eps_t, args.inner_steps, args.inner_beta, args.detach_std, adversary_rng)).mean()

                # Policy loss
                # WocaR: the PPO clipped loss with the worst-case-aware advantage + kappa * the regulariser
                pg_loss_ppo = clipped_surrogate(newlogprob, b_logprobs[mb_inds], mb_advantages, args.clip_coef).mean()
                pg_loss = pg_loss_ppo + args.kappa * sa_reg

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
        # WocaR: how far the search lowers Q below the mean action, against a uniform action in the same box (last minibatch)
        with torch.no_grad():
            mu, (low, high) = agent.actor_mean(mb_obs), attacks.interval_bounds(agent.actor_mean, mb_obs, args.wq_eps)
            q_at = lambda a: q_net(torch.cat([mb_obs, a], 1)).mean().item()
            q_drop_search, q_drop_random = (q_at(mu) - q_at(a) for a in (worst_action(q_net, mb_obs, mu, low, high, args.wq_steps),
                                                                         low + (high - low) * torch.rand(mu.shape, generator=adversary_rng)))
        writer.add_scalar("adversary/epsilon", eps_t, global_step)
        writer.add_scalar("adversary/regulariser", sa_reg.item(), global_step)
        writer.add_scalar("wocar/q_weight", kappa_w, global_step)
        writer.add_scalar("wocar/q_loss", q_loss.item(), global_step)
        writer.add_scalar("wocar/q_drop_search", q_drop_search, global_step)
        writer.add_scalar("wocar/q_drop_random", q_drop_random, global_step)
        writer.add_scalar("losses/policy_loss_ppo", pg_loss_ppo.item(), global_step)
        recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
        print(f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} elapsed {hms(elapsed)} ETA {hms(eta)} return(last 10) {recent} spread {action_spread:.3f} |dmu/ds| {input_sensitivity:.3f} eps {eps_t:.4f} R {sa_reg.item():.2e} kappa_w {kappa_w:.3f} Q loss {q_loss.item():.2e} Q drop search/random {q_drop_search:.2e}/{q_drop_random:.2e}", flush=True)

        if args.save_every > 0 and iteration % args.save_every == 0:
            save_checkpoint(ckpt_path, agent, optimizer, envs, args, global_step, iteration, q_state())

    save_checkpoint(ckpt_path, agent, optimizer, envs, args, global_step, args.num_iterations, q_state())
    print(f"saved {ckpt_path}")
    envs.close()
    writer.close()
