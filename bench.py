"""Throughput benchmark: training SPS of the training scripts, a plain CleanRL-semantics loop for comparison,
and the evaluation time of each attack. Run it on an otherwise idle machine; it prints a markdown report
and writes it into docs/benchmarks.md, replacing only its own marked section (the prose around it stays).

    python bench.py                                   # training part only
    python bench.py --checkpoint runs/<run>/agent.pt  # + evaluation timings on a trained checkpoint

Training scripts run as subprocesses for --total-timesteps steps each (one torch thread, one at a time);
their SPS is the one they print (global steps / time in the training loop, imports excluded). The
CleanRL-semantics baseline below is the same PPO with CleanRL's mechanics: torch tensor buffers filled
step by step, `torch.Tensor(...)` conversions and `torch.no_grad()` in the rollout; it runs in-process
and is timed the same way.
"""
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import mujoco
import numpy as np
import torch
import torch.nn as nn
import tyro

from torch.distributions.normal import Normal

from benchmark import write_section
from spo_ppo import Agent, make_env, print_mujoco_warning

REPO = os.path.dirname(os.path.abspath(__file__))
TRAINING_SCRIPTS = ["spo_ppo.py", "arpo_ppo.py", "barpo_ppo.py", "sappo_ppo.py", "radial_ppo.py", "wocar_ppo.py"]


@dataclass
class Args:
    env_id: str = "Hopper-v5"
    """environment of the training benchmark"""
    total_timesteps: int = 8192
    """steps per training script (multiple of 2048: whole PPO iterations)"""
    repeats: int = 1
    """runs of each training script, interleaved (spo, arpo, ..., spo, arpo, ...); the median SPS is reported"""
    checkpoint: Optional[str] = None
    """if given, also time clean and attacked 50-episode evaluations of this checkpoint"""
    output: str = "docs/benchmarks.md"
    """where to write the markdown report"""


class CleanRLAgent(Agent):
    def get_action_and_value(self, x, action=None):  # CleanRL's: Normal with its default argument checks
        action_mean = self.actor_mean(x)
        probs = Normal(action_mean, torch.exp(self.actor_logstd.expand_as(action_mean)))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


def cleanrl_baseline(env_id, total_timesteps, seed=1):
    """CleanRL ppo_continuous_action's loop, gymnasium 1.x: torch tensor buffers, no inference_mode, default Adam
    and distribution checks, per-minibatch approx-KL and clip fraction (TensorBoard writes omitted)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    num_steps, batch_size, minibatch_size = 2048, 2048, 64
    envs = gym.vector.SyncVectorEnv([make_env(env_id, 0.99)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    agent = CleanRLAgent(envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    obs = torch.zeros((num_steps, 1) + envs.single_observation_space.shape)
    actions = torch.zeros((num_steps, 1) + envs.single_action_space.shape)
    logprobs, rewards, dones, values = (torch.zeros((num_steps, 1)) for _ in range(4))
    next_obs, _ = envs.reset(seed=seed)
    next_obs, next_done = torch.Tensor(next_obs), torch.zeros(1)
    start, global_step = time.time(), 0
    for iteration in range(total_timesteps // num_steps):
        for step in range(num_steps):
            global_step += 1
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step], logprobs[step] = action, logprob
            next_obs, reward, term, trunc, _ = envs.step(action.cpu().numpy())
            next_done = np.logical_or(term, trunc)
            rewards[step] = torch.tensor(reward).view(-1)
            next_obs, next_done = torch.Tensor(next_obs), torch.Tensor(next_done)
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(num_steps)):
                nextnonterminal = 1.0 - (next_done if t == num_steps - 1 else dones[t + 1])
                nextvalues = next_value if t == num_steps - 1 else values[t + 1]
                delta = rewards[t] + 0.99 * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + 0.99 * 0.95 * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs, b_actions = obs.reshape(batch_size, -1), actions.reshape(batch_size, -1)
        b_logprobs, b_adv, b_ret = logprobs.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
        b_val = values.reshape(-1)
        b_inds, clipfracs = np.arange(batch_size), []
        for epoch in range(10):
            np.random.shuffle(b_inds)
            for s in range(0, batch_size, minibatch_size):
                mb = b_inds[s : s + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > 0.2).float().mean().item()]
                adv = (b_adv[mb] - b_adv[mb].mean()) / (b_adv[mb].std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)).mean()
                newvalue = newvalue.view(-1)
                v_clipped = b_val[mb] + torch.clamp(newvalue - b_val[mb], -0.2, 0.2)
                v_loss = 0.5 * torch.max((newvalue - b_ret[mb]) ** 2, (v_clipped - b_ret[mb]) ** 2).mean()
                loss = pg_loss - 0.0 * entropy.mean() + 0.5 * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optimizer.step()
    envs.close()
    return global_step / (time.time() - start)


def script_sps(script, env_id, total_timesteps):
    out = os.path.join("/tmp", f"bench_{script}_{os.getpid()}_{time.time_ns()}")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, script), "--env-id", env_id, "--total-timesteps", str(total_timesteps), "--run-dir", out],
        capture_output=True, text=True, cwd=REPO, check=True,
    )
    return float(re.findall(r"SPS (\d+)", proc.stdout)[-1])


def eval_seconds(checkpoint, attack, extra=()):
    out = f"/tmp/bench_eval_{os.getpid()}.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "evaluate.py"), checkpoint, "--attacks", attack, "--output", out, *extra],
        capture_output=True, text=True, cwd=REPO, check=True,
    )
    with open(out) as f:
        return json.load(f)["results"], proc.stdout


if __name__ == "__main__":
    args = tyro.cli(Args)
    mujoco.set_mju_user_warning(print_mujoco_warning)
    if args.total_timesteps < 2048 or args.total_timesteps % 2048:
        raise SystemExit("error: --total-timesteps must be a positive multiple of 2048 (whole PPO iterations)")
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(1)
    lines = [f"## Measured by bench.py", "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, one torch thread, one job at a time. Command: "
             f"`python bench.py --total-timesteps {args.total_timesteps} --repeats {args.repeats}" + (f" --checkpoint {args.checkpoint}`" if args.checkpoint else "`"), ""]

    print(f"training benchmark: {args.total_timesteps} steps on {args.env_id} per script", flush=True)
    base = cleanrl_baseline(args.env_id, args.total_timesteps)
    print(f"  cleanrl-semantics baseline  {base:7.0f} SPS", flush=True)
    scripts = [s for s in TRAINING_SCRIPTS if os.path.exists(os.path.join(REPO, s))]
    runs = {s: [] for s in scripts}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every script alike
        for script in scripts:
            runs[script].append(script_sps(script, args.env_id, args.total_timesteps))
            print(f"  {script:27s} {runs[script][-1]:7.0f} SPS", flush=True)
    sps = {s: float(np.median(v)) for s, v in runs.items()}
    lines += [f"### Training ({args.env_id}, {args.total_timesteps} steps each, median of {args.repeats} run(s))", "",
              "| script | SPS | wall time vs spo_ppo.py | speed vs CleanRL-semantics loop |", "|---|---|---|---|",
              f"| CleanRL-semantics loop (in bench.py) | {base:.0f} | {sps['spo_ppo.py'] / base:.2f}× | 1.00× |"]
    lines += [f"| `{s}` | {v:.0f} | {sps['spo_ppo.py'] / v:.2f}× | {v / base:.2f}× |" for s, v in sps.items()]

    if args.checkpoint:
        print(f"evaluation benchmark on {args.checkpoint}", flush=True)
        timings = {}
        results, _ = eval_seconds(args.checkpoint, "random,critic,mad")
        timings.update({k: v["seconds"] for k, v in results.items()})
        rs_dir = os.path.dirname(os.path.abspath(args.checkpoint))
        cached = [f for f in os.listdir(rs_dir) if f.startswith("rs_q_") and f.endswith(".pt")]
        for f in cached:  # time the RS default from scratch: move its cache aside, and always back
            os.rename(os.path.join(rs_dir, f), os.path.join(rs_dir, f + ".bench"))
        try:
            results, _ = eval_seconds(args.checkpoint, "rs")
            timings["rs: train Q (collect 50k victim steps + robust Sarsa)"] = results["rs"]["train_seconds"]
            timings["rs: attacked pass"] = results["rs"]["seconds"]
        finally:
            for f in cached:
                os.replace(os.path.join(rs_dir, f + ".bench"), os.path.join(rs_dir, f))
        for name in ("sarl", "paad"):  # learned attacks: the evaluation pass only (training them is ~5 min of one core each for Hopper, see README)
            for f in sorted(os.listdir(rs_dir)):
                if f.startswith(f"{name}_eps") and f.endswith(".pt"):
                    eps = f[len(name) + 4 : -3]
                    try:
                        results, _ = eval_seconds(args.checkpoint, name, ("--epsilon", eps))
                    except subprocess.CalledProcessError as e:  # e.g. trained against an older checkpoint
                        print(f"note: not timing {f}: {e.stdout.strip().splitlines()[-1] if e.stdout else e}", flush=True)
                        continue
                    timings[f"{name} (mean + sampled adversary, eps {eps})"] = results[name]["seconds"]
        attacked = timings["random"] + timings["critic"] + timings["mad"]
        lines += ["", "### Evaluation (50 deterministic episodes in lockstep per pass)", "", "| run | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
        lines += [f"| random + critic + mad vs natural | {attacked / timings['natural']:.2f}× |"]
        for k, v in timings.items():
            print(f"  {k:24s} {v:6.1f} s", flush=True)
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    write_section(args.output, "bench.py", report, new_file_head="# Benchmarks\n")  # only the measured section: the prose around it stays
    print(f"wrote {args.output}")
