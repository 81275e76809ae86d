"""Learned evaluation attacks: train, with PPO, an adversary policy that minimises a frozen victim's return by
perturbing the victim's observations inside the l_inf ball B_eps(s). One trainer, two attacks:

    sarl  SA-RL's optimal attack (Zhang et al. 2021, "Robust RL on state observations with learned optimal adversary")
    paad  PA-AD (Sun et al. 2022, "Who is the strongest enemy? Towards optimal and efficient evasion attacks in deep RL")

Objective: for a fixed victim with mean action mu (deterministic), the adversary sees the true normalised state s,
draws an action a ~ N(m_phi(s), sigma_phi) and turns it into the observation s' = perturb(s, a) in B_eps(s) that the
victim acts on; the environment steps on s. This is an ordinary MDP for the adversary, with reward -r:

    max_phi  E[ sum_t gamma^t (-r(s_t, mu(s'_t))) ],   s'_t = perturb(s_t, a_t),   a_t ~ N(m_phi(s_t), sigma_phi)

What differs between the two attacks (SarlArgs, PaadArgs, adversary_action_dim and perturb below; the rest is shared):

                      sarl (SA-RL)                            paad (PA-AD)
    adversary action  a perturbation a in R^obs_dim           a direction d in the victim's action space R^act_dim
                      (11 for Hopper, 105 for Ant)            (3 for Hopper): the "director"
    perturb(s, a)     s + eps * hardtanh(a)                   argmax_{s' in B_eps(s)} < mu(s') - mu(s), d / |d| >
                      (attacks.bounded_perturbation)          (attacks.paad_actor, the "actor": --actor-steps 10
                                                              sign-gradient steps of --actor-step-size eps/10)
    --ent-coef        1e-2 (entropy bonus)                    0
    --init-logstd     -1 (std 0.37)                           0 (std 1)
    saved as          <victim_dir>/sarl_eps<eps>.pt           <victim_dir>/paad_eps<eps>.pt

PA-AD's point is the smaller policy search: the director picks among act_dim directions instead of obs_dim
perturbations, and the victim's own gradients do the rest. In the code PA-AD's director is called `adversary` too.

Pseudocode, one iteration (PPO of the adversary; the victim and its normaliser never change):
    for num_steps: s = normalised obs (victim's frozen statistics, clipped to +-10)
                   a ~ adversary(s);  s' = perturb(s, a)                    # always inside B_eps(s)
                   env.step(mu_victim(s'));  adversary reward = -env reward (normalised like PPO's)
    GAE on the adversary's rewards; 10 epochs x 4 minibatches of the PPO clipped loss on (s, a) with an
    entropy bonus of --ent-coef; with --early-stop-window: stop once the victim's return has stopped falling
The adversary's networks are the PPO agent of spo_ppo.py (64-64 tanh actor and critic, state-independent
log-std) with an action of the size above. It does not normalise its observations: it acts on the victim's
normalised s. It normalises its rewards (NormalizeReward on -r, clip +-10), as PPO does; those statistics are
only used during training and are stored in the checkpoint for the record.

Speed, same numbers bit for bit (tests/test_learned_attacks.py compares weights and every logged scalar with the
scripts this one replaced): spo_ppo.py's faster NormalizeReward, MuJoCo's per-step info dropped (DropInfo), the
PA-AD actor's constant work done once per call (attacks.paad_actor), foreach Adam, one index tensor per minibatch.
`python throughput.py --learned sarl,paad` measures it against the code before these changes (docs/benchmarks.md).

Output: `<victim_dir>/<attack>_eps<eps>.pt` (or --output): the adversary's state dict and sizes, eps, the sha1 of
the victim checkpoint it was trained against (evaluate.py ignores a stale adversary), the args (PA-AD's actor
steps among them), training steps, the reward normaliser statistics and, with --grid, every setting's score.
It is written to a temporary file of its own and moved into place only at the end: a failed run never overwrites
it. An adversary already at the output path (e.g. a committed one next to an exported agent) is never replaced
silently: the script refuses before training unless --overwrite is given (--output trains one elsewhere, where
evaluate.py does not look). `python evaluate.py <victim> --attacks sarl` (or paad) then evaluates it with its
mean action and with sampled actions, and reports the stronger.

Budget: 1,000,000 steps by default, about 5 min of one core for Hopper. The learning rate anneals to 0 over the
budget, so a run with a shorter --total-timesteps is weaker than a longer run at the same step.
`--early-stop-window 100000` stops once the victim's mean return over such windows of training episodes has not
fallen by --early-stop-min-drop (a fraction of the first window's) for --early-stop-patience windows, and saves
the adversary of the best window; it is off by default (it can stop on a plateau before the return falls).
`--literature-budget` trains 5,000,000 steps without the early stop (the order of magnitude of the published
MuJoCo attack budgets as we recall them; we did not verify the exact per-environment numbers). `--eval-at`
evaluates the adversary at given steps (budget curves; budget_curve.py plots them). docs/benchmarks.md
("Learned attacks") has the budget curves, the timings and the runs that chose these defaults.

Our reconstruction / choices: PPO as CleanRL's, with lr 1e-3 and 10 epochs x 4 minibatches of 512 (8 sub-envs x
256 steps); SA-RL's entropy bonus is the summed entropy of the obs_dim Gaussian, and its narrower initial std
makes it stronger on a victim that noise helps and weaker on one that noise hurts (for a worst case also run
`--init-logstd 0`); the adversary sees only s (not the victim's action or history); the victim acts with its mean
action (ATLA samples it during attack training); truncation at the time limit ends the adversary's episode like
a termination (CleanRL convention). PA-AD's actor maximises the projection <mu(s') - mu(s), d/|d|> with
sign-gradient steps from s' = s (PA-AD's continuous-action actor, as we recall the paper, uses a cosine-
similarity-type objective; we did not check their code. The projection also rewards a larger move along d, and
its gradient is well defined at s' = s). `--grid` trains len(grid_learning_rates) x len(grid_ent_coefs)
settings (default 3 learning rates x 1 entropy coefficient) with the same budget each, evaluates each adversary
on --grid-episodes episodes and keeps the one with the lowest victim return. The authors of both attacks tuned
their attackers more extensively per victim (larger grids of PPO hyperparameters, the strongest reported); our
3 settings are a small scan, so the victim returns we report under sarl and paad may be higher than their search
would give (our attacks may be weaker).

    python learned_attack.py sarl runs/<run>/agent.pt               # SA-RL, default budget, eps per env
    python learned_attack.py paad runs/<run>/agent.pt --grid        # PA-AD, 3 learning rates, keep the strongest
    python learned_attack.py sarl runs/<run>/agent.pt --overwrite   # train again, replacing sarl_eps<eps>.pt
    python learned_attack.py paad --help                            # PA-AD's flags and defaults
    python evaluate.py runs/<run>/agent.pt --attacks all            # now includes sarl and paad
"""
import copy
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import gymnasium as gym
import mujoco
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.utils.tensorboard import SummaryWriter

import attacks
import evaluate
from spo_ppo import Agent, NormalizeReward, clipped_surrogate, hms, print_mujoco_warning, value_loss

LITERATURE_TIMESTEPS = 5000000


@dataclass
class Args:
    """The flags of both attacks; SarlArgs and PaadArgs below add the ones whose defaults differ."""
    victim: tyro.conf.Positional[str]
    """path to the victim's agent.pt (written by any of the training scripts)"""
    epsilon: Optional[float] = None
    """l_inf radius in normalised observation units (default per env: Hopper 0.075, Walker2d 0.05, HalfCheetah/Ant 0.15)"""
    env_id: Optional[str] = None
    """environment (default: the victim's; a different one is refused)"""
    output: Optional[str] = None
    """where to write the adversary (default: <victim_dir>/<attack>_eps<eps>.pt, where evaluate.py looks for it)"""
    overwrite: bool = False
    """replace the file at the output path if there is one (without it an existing adversary, e.g. a committed one, is never replaced)"""
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    threads: int = 1
    """torch CPU threads; 1 is fastest for 64-sample minibatches"""
    run_dir: Optional[str] = None
    """where TensorBoard logs go (default: runs/{env_id}__{exp_name}_{attack}__eps{eps}__{seed}__{unix time})"""

    # Algorithm specific arguments (the adversary's PPO)
    total_timesteps: int = 1000000
    """environment steps of adversary training (~5 min of one core for Hopper; --early-stop-window may end it sooner)"""
    literature_budget: bool = False
    """train for 5,000,000 steps without the early stop instead of --total-timesteps (a literature-scale budget)"""
    learning_rate: float = 1e-3
    """the learning rate of the adversary (actor and critic)"""
    num_envs: int = 8
    """the number of parallel copies of the victim's environment"""
    num_steps: int = 256
    """the number of steps to run in each environment per rollout (batch = num_envs * num_steps)"""
    anneal_lr: bool = True
    """toggle learning rate annealing"""
    gamma: float = 0.99
    """the discount factor gamma of the adversary"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the adversary"""
    norm_adv: bool = True
    """toggles advantages normalization (per minibatch)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold (early stop of the epoch loop)"""
    hidden_size: int = 64
    """width of the two tanh hidden layers of the adversary's actor and critic"""

    # Early stop and budget curve
    early_stop_window: int = 0
    """early stop: steps per window of training episodes (>= 1 episode each); the adversary saved is that of the best window (0, the default: no early stop)"""
    early_stop_patience: int = 2
    """early stop after this many windows whose mean victim return is not below the best earlier one by --early-stop-min-drop"""
    early_stop_min_drop: float = 0.05
    """the drop that counts, as a fraction of the first window's mean victim return"""
    eval_at: Tuple[int, ...] = ()
    """training steps at which to evaluate the adversary (mean and sampled, --eval-episodes each): the budget curve"""
    eval_episodes: int = 50
    """episodes per evaluation of --eval-at (evaluate.py's seed, so the numbers are evaluate.py's)"""

    # Hyperparameter scan
    grid: bool = False
    """train one adversary per (learning rate, entropy coef) of the grid and keep the strongest"""
    grid_learning_rates: Tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    """learning rates scanned by --grid"""
    grid_episodes: int = 10
    """deterministic episodes used to score each adversary of the grid (lowest victim return wins)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


@dataclass
class SarlArgs(Args):
    """SA-RL: the adversary's action a in R^obs_dim is the perturbation, s' = s + eps * hardtanh(a)."""
    attack: ClassVar[str] = "sarl"
    ent_coef: float = 1e-2
    """coefficient of the entropy bonus (SA-RL: without it the adversary's std shrinks before it finds a direction)"""
    init_logstd: float = -1.0
    """initial value of the adversary's state-independent log-std (SA-RL: -1, a narrower start than N(0, 1) noise)"""
    grid_ent_coefs: Tuple[float, ...] = (1e-2,)
    """entropy coefficients scanned by --grid"""


@dataclass
class PaadArgs(Args):
    """PA-AD: the director's action d in R^act_dim is a direction of the victim's action; the actor finds the s' in
    B_eps(s) that moves the victim's mean action along it."""
    attack: ClassVar[str] = "paad"
    ent_coef: float = 0.0
    """coefficient of the entropy bonus"""
    init_logstd: float = 0.0
    """initial value of the director's state-independent log-std"""
    grid_ent_coefs: Tuple[float, ...] = (0.0,)
    """entropy coefficients scanned by --grid"""
    actor_steps: int = 10
    """PA-AD: sign-gradient steps of the actor that turns the direction into a state perturbation"""
    actor_step_size: Optional[float] = None
    """PA-AD: step size of the actor (default: epsilon / actor_steps)"""


def adversary_action_dim(args, victim_ckpt):
    """The size of the adversary's action: the observation's (SA-RL) or the victim's action's (PA-AD)."""
    if args.attack == "sarl":
        return int(np.prod(victim_ckpt["obs_shape"]))  # SA-RL: a perturbation of the observation
    return int(np.prod(victim_ckpt["action_shape"]))  # PA-AD: a direction in the victim's action space


def perturb(victim, obs, eps, adversary_action, args):
    """The observation the victim sees, inside B_eps(s): s + eps * hardtanh(a) for SA-RL; for PA-AD the actor's s'
    that moves the victim's mean action along the director's direction."""
    if args.attack == "sarl":
        return attacks.bounded_perturbation(obs, eps, adversary_action)
    return attacks.paad_actor(victim, obs, eps, adversary_action, steps=args.actor_steps, step_size=args.actor_step_size)


class DropInfo(gym.Wrapper):
    """Returns an empty info: MuJoCo's per-step one (positions, reward terms) is read by nothing here, and
    SyncVectorEnv would batch each of its keys into arrays at every step. RecordEpisodeStatistics, above this
    wrapper, still adds the episode's return and length at its end."""

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)[0], {}

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return obs, reward, terminated, truncated, {}


def make_env(env_id, obs_rms, gamma):
    """The victim's evaluation pipeline (frozen normaliser, clip +-10) plus the adversary's reward."""

    def thunk():
        env = evaluate.make_eval_env(env_id, obs_rms)()
        env = DropInfo(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)  # the victim's raw returns under attack
        env = gym.wrappers.TransformReward(env, lambda reward: -reward)  # adversary reward = -env reward
        env = NormalizeReward(env, gamma=gamma)  # gymnasium's, number for number, faster (spo_ppo.py)
        env = gym.wrappers.TransformReward(env, lambda reward: min(max(reward, -10.0), 10.0))  # np.clip's value, for one number
        return env

    return thunk


def victim_return(victim, victim_ckpt, adversary, eps, args, num_episodes, seed, sampled=False):
    """Mean victim return over lockstep episodes, the adversary acting with its mean action (or sampled ones) as
    evaluate.py does it (torch seeded with `seed`); the caller's random state is left as it was."""

    def perturb_batch(x):
        with torch.no_grad():
            return perturb(victim, x, eps, evaluate.adversary_action(adversary, x, sampled), args)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        returns, _ = evaluate.run_episodes(victim, victim_ckpt["env_id"], victim_ckpt["obs_rms"], num_episodes, perturb_batch, seed=seed)
    return float(returns.mean())


def stalled(window_means, patience, min_drop):
    """Early stop: the last `patience` windows' mean victim returns are none of them `min_drop` (a fraction of
    the first window's) below the best (lowest) earlier window."""
    if len(window_means) <= patience:
        return False
    best_before = min(window_means[:-patience])
    return min(window_means[-patience:]) > best_before - min_drop * abs(window_means[0])


def train(args, victim, victim_ckpt, eps, run_dir):
    """PPO of the adversary against the frozen victim; returns the adversary and what the checkpoint records."""
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    # env setup: the victim's env, observations normalised with its frozen statistics
    envs = gym.vector.SyncVectorEnv(
        [make_env(victim_ckpt["env_id"], victim_ckpt["obs_rms"], args.gamma) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = adversary_action_dim(args, victim_ckpt)  # obs_dim for SA-RL, the victim's action size for PA-AD

    adversary = Agent(obs_dim, act_dim, args.hidden_size, args.init_logstd)
    # foreach: one call per Adam operation for all the parameters instead of a Python loop over them; the same
    # arithmetic as the default single-tensor Adam, bit for bit (fused=True would round differently)
    optimizer = optim.Adam(adversary.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)

    # ALGO Logic: Storage setup (numpy buffers; the rollout runs under torch.inference_mode)
    obs = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions = np.zeros((args.num_steps, args.num_envs, act_dim), dtype=np.float32)
    logprobs = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    values = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = next_obs.astype(np.float32)
    next_done = np.zeros(args.num_envs, dtype=np.float32)
    recent_returns = []
    window_start, window_returns, window_means, stop_step, kept = 0, [], [], None, None  # early stop
    curve, eval_points, eval_seconds, eval_cpu = [], sorted(args.eval_at), 0.0, 0.0  # budget curve
    cpu_start = time.process_time()  # this process's CPU time: the cost on one core, whatever else shares the machine

    for iteration in range(1, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        with torch.inference_mode():
            for step in range(0, args.num_steps):
                global_step += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                s = torch.from_numpy(next_obs)
                action, logprob, _, value = adversary.get_action_and_value(s)
                values[step] = value.flatten().numpy()
                actions[step] = action.numpy()
                logprobs[step] = logprob.numpy()

                s_adv = perturb(victim, s, eps, action, args)  # the victim sees s' in B_eps(s)
                victim_action = victim.actor_mean(s_adv)  # deterministic victim: its mean action
                next_obs, reward, terminations, truncations, infos = envs.step(victim_action.numpy())  # env steps on the true state
                next_obs = next_obs.astype(np.float32)
                next_done = np.logical_or(terminations, truncations).astype(np.float32)
                rewards[step] = reward

                if "final_info" in infos:
                    finished = infos["final_info"]["_episode"]
                    for r, l in zip(infos["final_info"]["episode"]["r"][finished], infos["final_info"]["episode"]["l"][finished]):
                        writer.add_scalar("charts/victim_episodic_return", r, global_step)
                        writer.add_scalar("charts/victim_episodic_length", l, global_step)
                        recent_returns = (recent_returns + [float(r)])[-10:]
                        window_returns.append(float(r))

            # bootstrap value if not done
            next_value = adversary.get_value(torch.from_numpy(next_obs)).flatten().numpy()
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

        # Optimizing the adversary's policy and value network
        b_inds = np.arange(args.batch_size)
        params = list(adversary.parameters())  # for the gradient clipping: listed once, not on each minibatch
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = torch.from_numpy(b_inds[start:end])  # one index tensor, not a conversion per buffer it selects from

                _, newlogprob, entropy, newvalue = adversary.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
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

                # Policy loss
                pg_loss = clipped_surrogate(newlogprob, b_logprobs[mb_inds], mb_advantages, args.clip_coef).mean()

                # Value loss
                v_loss = value_loss(newvalue.view(-1), b_returns[mb_inds], b_values[mb_inds], args.clip_coef, args.clip_vloss)

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                if not math.isfinite(loss.item()):
                    raise SystemExit(f"error: non-finite adversary loss at iteration {iteration}; stopping without writing an adversary")

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        elapsed = time.time() - start_time - eval_seconds  # training time, without the budget curve's evaluations
        sps = int(global_step / elapsed)
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
        eta = elapsed / iteration * (args.num_iterations - iteration)
        print(f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} elapsed {hms(elapsed)} ETA {hms(eta)} victim return(last 10) {recent}", flush=True)

        due = [p for p in eval_points if p <= global_step or iteration == args.num_iterations]
        if due:  # budget curve: evaluate the adversary as it is now
            t0, c0 = time.time(), time.process_time()
            point = {"step": global_step, "train_seconds": round(elapsed, 1), "train_cpu_seconds": round(c0 - cpu_start - eval_cpu, 1)}
            for label in ("mean", "sampled"):
                point[label] = victim_return(victim, victim_ckpt, adversary, eps, args, args.eval_episodes, evaluate.Args.seed, label == "sampled")
                writer.add_scalar(f"curve/victim_return_{label}", point[label], global_step)
            curve.append(point)
            eval_points = [p for p in eval_points if p not in due]
            eval_seconds, eval_cpu = eval_seconds + time.time() - t0, eval_cpu + time.process_time() - c0
            print(f"curve: step {global_step} victim return mean {point['mean']:.1f} sampled {point['sampled']:.1f} ({time.time() - t0:.0f} s)", flush=True)

        if args.early_stop_window and global_step - window_start >= args.early_stop_window and window_returns:
            window_start, window_means, window_returns = global_step, window_means + [float(np.mean(window_returns))], []
            if window_means[-1] == min(window_means):  # the strongest adversary so far: the one that is saved
                kept = (global_step, copy.deepcopy(adversary.state_dict()))
            if stalled(window_means, args.early_stop_patience, args.early_stop_min_drop):
                stop_step = global_step
                print(f"early stop at step {global_step}: victim return per {args.early_stop_window}-step window "
                      + " ".join(f"{m:.0f}" for m in window_means), flush=True)
                break

    if kept is not None:
        adversary.load_state_dict(kept[1])
    reward_rms = []  # the adversary's reward normaliser, one per sub-env (training only; kept for the record)
    for env in envs.envs:
        rms = env.get_wrapper_attr("return_rms")
        reward_rms.append({"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)})
    envs.close()
    writer.close()
    adversary.eval()
    info = {"global_step": global_step, "train_seconds": round(time.time() - start_time - eval_seconds, 1), "reward_rms": reward_rms,
            "train_cpu_seconds": round(time.process_time() - cpu_start - eval_cpu, 1),
            "recent_victim_returns": recent_returns, "early_stop_step": stop_step, "window_means": window_means, "curve": curve,
            "kept_step": kept[0] if kept else global_step}
    return adversary, info


def save_adversary(path, adversary, info, args, eps, victim_ckpt, victim_sha1, grid_results):
    """Self-describing adversary checkpoint, written to path.tmp and then moved into place."""
    checkpoint = {
        "attack": args.attack,
        "env_id": victim_ckpt["env_id"],
        "obs_dim": int(np.prod(victim_ckpt["obs_shape"])),
        "action_dim": adversary.actor_logstd.shape[1],
        "hidden_size": args.hidden_size,
        "adversary": adversary.state_dict(),
        "epsilon": eps,
        "victim_sha1": victim_sha1,
        "victim_checkpoint": os.path.abspath(args.victim),
        "victim_global_step": victim_ckpt.get("global_step"),
        "reward_rms": info["reward_rms"],
        "args": vars(args),
        "global_step": info["global_step"],
        "train_seconds": info["train_seconds"],
        "train_cpu_seconds": info["train_cpu_seconds"],
        "early_stop_step": info["early_stop_step"],
        "early_stop_window_means": info["window_means"],
        "kept_step": info["kept_step"],
        "curve": info["curve"],
        "recent_victim_returns": info["recent_victim_returns"],
        "grid": grid_results,
        "versions": {
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "gymnasium": gym.__version__,
            "mujoco": mujoco.__version__,
            "numpy": np.__version__,
        },
    }
    evaluate.write_atomically(path, lambda tmp: torch.save(checkpoint, tmp))


def main(args):
    """Check the inputs, train the adversary (or the grid of them), keep the strongest, save it. Returns its path."""
    if args.epsilon is not None:
        evaluate.check_epsilon(args.epsilon)
    victim, victim_ckpt = evaluate.load_checkpoint(args.victim, args.env_id)
    eps = args.epsilon if args.epsilon is not None else evaluate.default_epsilon(victim_ckpt["env_id"])
    args.epsilon = eps
    if args.literature_budget:
        args.total_timesteps, args.early_stop_window = LITERATURE_TIMESTEPS, 0
    positive = ["total_timesteps", "num_steps", "num_envs", "num_minibatches", "update_epochs", "learning_rate", "grid_episodes",
                "eval_episodes", "early_stop_patience"]
    if not all(getattr(args, name) > 0 for name in positive):
        raise SystemExit("error: " + ", ".join("--" + n.replace("_", "-") for n in positive) + " must be positive")
    if not (args.ent_coef >= 0 and args.early_stop_window >= 0 and args.early_stop_min_drop >= 0):
        raise SystemExit("error: --ent-coef, --early-stop-window and --early-stop-min-drop must be >= 0")
    for flag, value, ok, what in (  # nan fails every comparison
        ("--learning-rate", args.learning_rate, args.learning_rate < np.inf, "finite"),
        ("--ent-coef", args.ent_coef, args.ent_coef < np.inf, "finite"),
        ("--early-stop-min-drop", args.early_stop_min_drop, args.early_stop_min_drop < np.inf, "finite"),
        ("--gamma", args.gamma, 0 <= args.gamma <= 1, "in [0, 1]"),
        ("--gae-lambda", args.gae_lambda, 0 <= args.gae_lambda <= 1, "in [0, 1]"),
        ("--clip-coef", args.clip_coef, 0 < args.clip_coef < np.inf, "a finite number > 0"),
        ("--vf-coef", args.vf_coef, 0 <= args.vf_coef < np.inf, "a finite number >= 0"),
        ("--max-grad-norm", args.max_grad_norm, args.max_grad_norm > 0, "> 0"),
        ("--target-kl", args.target_kl, args.target_kl is None or 0 < args.target_kl < np.inf, "a finite number > 0"),
        ("--init-logstd", args.init_logstd, np.isfinite(args.init_logstd), "finite"),
        ("--hidden-size", args.hidden_size, args.hidden_size >= 1, ">= 1"),
        ("--threads", args.threads, args.threads >= 1, ">= 1"),
        ("--grid-learning-rates", list(args.grid_learning_rates), not args.grid or (args.grid_learning_rates and all(0 < v < np.inf for v in args.grid_learning_rates)), "finite numbers > 0"),
        ("--grid-ent-coefs", list(args.grid_ent_coefs), not args.grid or (args.grid_ent_coefs and all(0 <= v < np.inf for v in args.grid_ent_coefs)), "finite numbers >= 0"),
    ):
        if not ok:
            raise SystemExit(f"error: {flag} must be {what}, got {value}")
    if not all(0 < step <= args.total_timesteps for step in args.eval_at):
        raise SystemExit(f"error: every --eval-at step must be in (0, --total-timesteps = {args.total_timesteps}], got {list(args.eval_at)}")
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = max(1, args.total_timesteps // args.batch_size)
    if args.minibatch_size < 1:
        raise SystemExit("error: --num-minibatches is larger than the batch (num_envs * num_steps)")
    if args.attack == "paad" and args.actor_steps < 1:
        raise SystemExit("error: --actor-steps must be positive")
    if args.attack == "paad" and args.actor_step_size is not None and not 0 < args.actor_step_size < np.inf:
        raise SystemExit(f"error: --actor-step-size must be a finite number > 0, got {args.actor_step_size}")
    out = args.output or evaluate.adversary_path(args.attack, args.victim, eps)
    if evaluate.output_problem(out):
        raise SystemExit(f"error: cannot write the adversary: {evaluate.output_problem(out)}")
    if os.path.exists(out) and not args.overwrite:  # e.g. a committed adversary next to an exported agent
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it, or --output to write the new adversary elsewhere")
    torch.set_num_threads(args.threads)
    victim_sha1 = evaluate.file_sha1(args.victim)
    run_name = f"{victim_ckpt['env_id']}__{args.exp_name}_{args.attack}__eps{eps:g}__{args.seed}__{int(time.time())}"
    run_dir = args.run_dir or os.path.join("runs", run_name)
    print(f"{args.attack}: adversary for {args.victim} ({victim_ckpt['env_id']}), eps = {eps:g}, {args.num_iterations * args.batch_size} steps")

    settings = [(lr, ent) for lr in args.grid_learning_rates for ent in args.grid_ent_coefs] if args.grid else [(args.learning_rate, args.ent_coef)]
    best, grid_results = None, []
    for lr, ent in settings:
        args.learning_rate, args.ent_coef = lr, ent
        setting_dir = os.path.join(run_dir, f"lr{lr:g}_ent{ent:g}") if args.grid else run_dir
        adversary, info = train(args, victim, victim_ckpt, eps, setting_dir)
        if args.grid:  # score every setting on the same episodes; the lowest victim return is the strongest
            score = victim_return(victim, victim_ckpt, adversary, eps, args, args.grid_episodes, seed=args.seed + 10000)
            grid_results.append({"learning_rate": lr, "ent_coef": ent, "victim_return": score})
            print(f"grid: lr {lr:g} ent {ent:g} -> victim return {score:.1f} over {args.grid_episodes} episodes", flush=True)
            if best is None or score < best[0]:
                best = (score, adversary, info, lr, ent)
        else:
            best = (None, adversary, info, lr, ent)
    _, adversary, info, args.learning_rate, args.ent_coef = best  # the saved args are those of the kept adversary
    save_adversary(out, adversary, info, args, eps, victim_ckpt, victim_sha1, grid_results)
    print(f"saved {out}" + (f" (strongest of the grid: lr {args.learning_rate:g}, ent {args.ent_coef:g})" if args.grid else ""))
    return out


if __name__ == "__main__":
    mujoco.set_mju_user_warning(print_mujoco_warning)
    main(tyro.extras.subcommand_cli_from_dict({"sarl": SarlArgs, "paad": PaadArgs}))
