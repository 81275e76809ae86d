"""Throughput benchmark: training SPS of the training scripts, a plain CleanRL-semantics loop for comparison,
and the evaluation time of each attack. Run it on an otherwise idle machine; it prints a markdown report
and writes it into docs/benchmarks.md, replacing only its own marked section (the prose around it stays).
It measures speed only: the sweep that trains and evaluates runs is benchmark.py, their statistics report.py.

    python throughput.py                                   # training part only
    python throughput.py --checkpoint runs/<run>/agent.pt  # + evaluation timings on a trained checkpoint
    python throughput.py --anchor <path>/cleanrl_sps.sh    # + CleanRL's own script, run in turn with spo_ppo.py
    python throughput.py --profile                         # where a training step's time goes, before/after (see profile())
    python throughput.py --learned paad,sarl --repeats 2   # learned_attack.py now and at --against, in turn (see learned())

Training scripts run as subprocesses for --total-timesteps steps each (one torch thread, one at a time);
their SPS is the one they print (global steps / time in the training loop, imports excluded). The
CleanRL-semantics baseline below is the same PPO with CleanRL's mechanics: torch tensor buffers filled
step by step, `torch.Tensor(...)` conversions and `torch.no_grad()` in the rollout; it runs in-process
and is timed the same way.
"""
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
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

from report import write_section
from spo_ppo import Agent, print_mujoco_warning

REPO = os.path.dirname(os.path.abspath(__file__))
TRAINING_SCRIPTS = ["spo_ppo.py", "arpo_ppo.py", "barpo_ppo.py", "sappo_ppo.py", "radial_ppo.py", "wocar_ppo.py"]
LEARNED_REFERENCE = "59a0106"  # the last commit before the speed-ups of learned_attack.py (throughput.py --learned)


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
    anchor: Optional[str] = None
    """a script kept outside this repository that runs CleanRL's unmodified ppo_continuous_action.py in its own venv and prints
    `cleanrl_sps N` last (cleanrl_sps.sh): each repeat also runs the real CleanRL ppo_continuous_action.py
    (its own venv; Hopper-v4 unless CLEANRL_ENV_ID says otherwise) for --total-timesteps, right before spo_ppo.py: the paired ratio"""
    profile: bool = False
    """instead of the training table: time the parts of a training step with the current code and with --reference's, in turn"""
    reference: str = "9906ed2"
    """the commit the profile compares with (default: the last one before the throughput work on the training scripts)"""
    profile_steps: int = 4096
    """env steps per timed part of the profile (the update: 10 epochs over the batch of that many steps, 64-sample minibatches)"""
    learned: Optional[str] = None
    """instead of the training table: the learned attacks (comma-separated: sarl, paad) trained by learned_attack.py as it is now
    and as it was at --against, in turn, --repeats times each, for --total-timesteps steps; and the parts of their step"""
    against: str = LEARNED_REFERENCE
    """the commit --learned compares with (default: the last one before the speed-ups of learned_attack.py)"""
    victim: str = "results/quick/Hopper-v5/spo/s1/agent.pt"
    """the checkpoint the --learned runs attack"""


class CleanRLAgent(Agent):
    def get_action_and_value(self, x, action=None):  # CleanRL's: Normal with its default argument checks
        action_mean = self.actor_mean(x)
        probs = Normal(action_mean, torch.exp(self.actor_logstd.expand_as(action_mean)))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


def cleanrl_make_env(env_id, gamma):
    """CleanRL's wrapper stack with gymnasium's own normalisers (the training scripts subclass them for speed)."""
    def thunk():
        env = gym.wrappers.ClipAction(gym.wrappers.RecordEpisodeStatistics(gym.make(env_id)))
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        env = gym.wrappers.NormalizeReward(env, gamma=gamma)
        return gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))

    return thunk


def cleanrl_baseline(env_id, total_timesteps, seed=1):
    """CleanRL ppo_continuous_action's loop, gymnasium 1.x: torch tensor buffers, no inference_mode, default Adam
    and distribution checks, per-minibatch approx-KL and clip fraction (TensorBoard writes omitted)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    num_steps, batch_size, minibatch_size = 2048, 2048, 64
    envs = gym.vector.SyncVectorEnv([cleanrl_make_env(env_id, 0.99)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
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


def script_sps(script, env_id, total_timesteps, code_dir=REPO):
    out = os.path.join("/tmp", f"bench_{script}_{os.getpid()}_{time.time_ns()}")
    proc = subprocess.run(
        [sys.executable, os.path.join(code_dir, script), "--env-id", env_id, "--total-timesteps", str(total_timesteps), "--run-dir", out],
        capture_output=True, text=True, cwd=code_dir, check=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    return float(re.findall(r"SPS (\d+)", proc.stdout)[-1])


def eval_seconds(checkpoint, attack, extra=()):
    out = f"/tmp/bench_eval_{os.getpid()}.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "evaluate.py"), checkpoint, "--attacks", attack, "--output", out, *extra],
        capture_output=True, text=True, cwd=REPO, check=True,
    )
    with open(out) as f:
        return json.load(f)["results"], proc.stdout



def anchor_sps(anchor, total_timesteps):
    """CleanRL's unmodified script through the anchor (its own venv, one thread); its last `cleanrl_sps N` line."""
    env = dict(os.environ, CLEANRL_TOTAL_TIMESTEPS=str(total_timesteps))
    proc = subprocess.run(["bash", os.path.abspath(anchor)], capture_output=True, text=True, cwd=REPO, env=env, check=True)
    return float(re.findall(r"^cleanrl_sps (\d+)", proc.stdout, re.M)[-1])


# The profile: each part of a training step timed in this process with time.process_time (the process's CPU time: with
# one thread on an idle machine, its wall time; on a loaded machine much less inflated than wall time), for the current
# code and for --reference's spo_ppo.py, in turn. The whole iteration is the scripts' own SPS (wall time, training loop).

def reference_code(commit, names=TRAINING_SCRIPTS + ["attacks.py"]):
    """The files `names` (default: the training scripts and attacks.py) as of `commit` in a temporary directory, and its
    spo_ppo.py imported as a module."""
    code_dir = tempfile.mkdtemp(prefix=f"bench_{commit}_")
    for name in names:
        proc = subprocess.run(["git", "show", f"{commit}:{name}"], capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"error: cannot read {name} at commit {commit} (--reference): {proc.stderr.strip()}")
        with open(os.path.join(code_dir, name), "w") as f:
            f.write(proc.stdout)
    spec = importlib.util.spec_from_file_location(f"spo_ppo_{commit}", os.path.join(code_dir, "spo_ppo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return code_dir, module


def cpu_us(step, n):
    """CPU microseconds per call of step(i), i = 0 .. n-1."""
    start = time.process_time()
    for i in range(n):
        step(i)
    return (time.process_time() - start) / n * 1e6


def env_step_us(env, actions):
    """A single env (reset at episode ends) stepped through the given actions."""
    env.reset(seed=1)

    def step(i):
        if any(env.step(actions[i])[2:4]):
            env.reset()

    return cpu_us(step, len(actions))


def rollout(code, env_id, steps):
    """The scripts' rollout loop (vector env, policy forward under inference_mode, numpy buffers) for `steps` steps:
    CPU us per step of the env part, of the policy part and of the whole step, and the batch it collected."""
    torch.manual_seed(1)
    envs = gym.vector.SyncVectorEnv([code.make_env(env_id, 0.99)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = code.Agent(obs_dim, act_dim)
    buffers = {"obs": np.zeros((steps, 1, obs_dim), np.float32), "actions": np.zeros((steps, 1, act_dim), np.float32),
               **{k: np.zeros((steps, 1), np.float32) for k in ("logprobs", "values", "rewards", "dones")}}
    next_obs = envs.reset(seed=1)[0].astype(np.float32)
    policy = env = 0.0
    with torch.inference_mode():
        for step in range(steps):
            t0 = time.process_time()
            buffers["obs"][step] = next_obs
            action, logprob, _, value = agent.get_action_and_value(torch.from_numpy(next_obs))
            buffers["values"][step], buffers["actions"][step], buffers["logprobs"][step] = value.flatten().numpy(), action.numpy(), logprob.numpy()
            t1 = time.process_time()
            next_obs, reward, terminations, truncations, infos = envs.step(buffers["actions"][step])
            next_obs = next_obs.astype(np.float32)
            buffers["dones"][step], buffers["rewards"][step] = np.logical_or(terminations, truncations), reward
            t2 = time.process_time()
            policy, env = policy + t1 - t0, env + t2 - t1
    envs.close()
    return env / steps * 1e6, policy / steps * 1e6, (env + policy) / steps * 1e6, agent, buffers


def update_us(code, agent, buffers, before=False, epochs=10, minibatch_size=64, clip_coef=0.2, adam=(("fused", True),)):
    """CPU us per minibatch update as the scripts run it by default (CleanRL's: per-minibatch approx-KL and clip fraction,
    normalised advantages, clipped surrogate and value loss, one backward, gradient clipping at 0.5, Adam with the options
    `adam`: the training scripts' fused one by default). `before`: the update lines before the throughput work (numpy
    indices, agent.parameters() at each clipping, torch.isfinite)."""
    optimizer = torch.optim.Adam([{"params": list(agent.actor_mean.parameters()) + [agent.actor_logstd]},
                                  {"params": agent.critic.parameters()}], lr=3e-4, eps=1e-5, **dict(adam))
    n = len(buffers["obs"]) // minibatch_size * minibatch_size
    b_obs, b_actions = (torch.from_numpy(buffers[k][:n].reshape(n, -1)) for k in ("obs", "actions"))
    b_logprobs, b_values = (torch.from_numpy(buffers[k][:n].reshape(-1)) for k in ("logprobs", "values"))
    rng = np.random.default_rng(0)
    b_advantages, b_returns = torch.from_numpy(rng.normal(size=n).astype(np.float32)), b_values + 0.1
    b_inds = np.arange(n)
    params = list(agent.parameters())

    def epoch(_):
        np.random.shuffle(b_inds)
        for start in range(0, n, minibatch_size):
            mb_inds = b_inds[start : start + minibatch_size] if before else torch.from_numpy(b_inds[start : start + minibatch_size])
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
            logratio = newlogprob - b_logprobs[mb_inds]
            ratio = logratio.exp()
            with torch.no_grad():
                old_approx_kl, approx_kl = (-logratio).mean(), ((ratio - 1) - logratio).mean()
                clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean().item()
            mb_advantages = b_advantages[mb_inds]
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            pg_loss = code.clipped_surrogate(newlogprob, b_logprobs[mb_inds], mb_advantages, clip_coef).mean()
            v_loss = code.value_loss(newvalue.view(-1), b_returns[mb_inds], b_values[mb_inds], clip_coef, True)
            loss = pg_loss - 0.0 * entropy.mean() + v_loss * 0.5
            if not (torch.isfinite(loss) if before else math.isfinite(loss.item())):
                raise SystemExit("error: non-finite loss in the profile's update")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters() if before else params, 0.5, foreach=True)
            optimizer.step()

    return cpu_us(epoch, epochs) / (n // minibatch_size)


def profile_parts(code, env_id, steps, before):
    """{part: CPU us} for one version of the code (module `code`: its spo_ppo.py; `before`: the reference's update lines)."""
    actions = np.random.default_rng(0).normal(size=(steps,) + gym.make(env_id).action_space.shape)  # an untrained policy's
    raw = gym.make(env_id).unwrapped
    low, high = raw.action_space.low, raw.action_space.high
    parts = {
        "MuJoCo env alone (`env.unwrapped.step`)": env_step_us(raw, np.clip(actions, low, high)),
        "`gym.make` env (+ TimeLimit, OrderEnforcing, PassiveEnvChecker)": env_step_us(gym.make(env_id), np.clip(actions, low, high)),
        "+ the training wrappers (`make_env`: episode statistics, clip, normalisers)": env_step_us(code.make_env(env_id, 0.99)(), actions),
    }
    vec = gym.vector.SyncVectorEnv([code.make_env(env_id, 0.99)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    vec.reset(seed=1)
    parts["+ `SyncVectorEnv` (1 env, SAME_STEP autoreset)"] = cpu_us(lambda i: vec.step(actions[i : i + 1]), steps)
    vec.close()
    agent = code.Agent(raw.observation_space.shape[0], raw.action_space.shape[0])
    obs = torch.from_numpy(np.random.default_rng(1).normal(size=(steps, 1, raw.observation_space.shape[0])).astype(np.float32))

    def forward(i):
        action, logprob, _, value = agent.get_action_and_value(obs[i])
        value.flatten().numpy(), action.numpy(), logprob.numpy()

    with torch.inference_mode():
        parts["policy forward alone (`get_action_and_value` under inference_mode, to numpy)"] = cpu_us(forward, steps)
    env_us, policy_us, step_us, agent, buffers = rollout(code, env_id, steps)
    parts["rollout loop: its env step"] = env_us
    parts["rollout loop: its policy forward"] = policy_us
    parts["rollout loop: one step"] = step_us
    parts["one minibatch update (64 samples; 320 per 2048-step iteration)"] = update_us(code, agent, buffers, before)
    parts["the update per env step (320 minibatches / 2048 steps)"] = parts["one minibatch update (64 samples; 320 per 2048-step iteration)"] * 320 / 2048
    return parts


def profile(args):
    code_dir, reference = reference_code(args.reference)
    try:
        return profile_versions(args, code_dir, reference)
    finally:
        shutil.rmtree(code_dir)


def profile_versions(args, code_dir, reference):
    import spo_ppo as current

    torch.set_num_threads(1)
    versions = {args.reference: (reference, code_dir), "current": (current, REPO)}
    parts, sps = {v: [] for v in versions}, {(v, s): [] for v in versions for s in TRAINING_SCRIPTS}
    for _ in range(args.repeats):  # in turn, so a slow spell of the machine hits both versions alike
        for name, (code, _) in versions.items():
            parts[name].append(profile_parts(code, args.env_id, args.profile_steps, before=name == args.reference))
            print(f"  {name}: " + ", ".join(f"{v:.0f}" for v in parts[name][-1].values()), flush=True)
        for script in TRAINING_SCRIPTS:
            for name, (_, directory) in versions.items():
                sps[name, script].append(script_sps(script, args.env_id, args.total_timesteps, directory))
                print(f"  {name} {script:16s} {sps[name, script][-1]:7.0f} SPS", flush=True)
    median = {v: {k: float(np.median([p[k] for p in parts[v]])) for k in parts[v][0]} for v in versions}
    ref, cur = median[args.reference], median["current"]
    lines = ["## Profile of a training step (`throughput.py --profile`)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"one torch thread; {args.env_id}, an untrained policy; median of {args.repeats} run(s), the two versions in turn. Command: "
             f"`python throughput.py --profile --profile-steps {args.profile_steps} --total-timesteps {args.total_timesteps} --repeats {args.repeats}`. The parts are CPU time "
             f"(`time.process_time`) in one process, {args.profile_steps} env steps each; the iteration is the scripts' own SPS (wall time "
             f"of the training loop, {args.total_timesteps} steps).", "",
             f"| part | before ({args.reference}), µs | now, µs | speed-up |", "|---|---|---|---|"]
    lines += [f"| {k} | {ref[k]:.0f} | {cur[k]:.0f} | {ref[k] / cur[k]:.2f}× |" for k in ref]
    per_step = {key: 1e6 / float(np.median(v)) for key, v in sps.items()}
    lines += ["", f"Whole iterations, µs per env step (1 / SPS) and the wall time relative to `spo_ppo.py` of the same version:", "",
              f"| script | before ({args.reference}), µs | vs SPO | now, µs | vs SPO | speed-up |", "|---|---|---|---|---|---|"]
    for script in TRAINING_SCRIPTS:
        b, n = per_step[args.reference, script], per_step["current", script]
        b_spo, n_spo = per_step[args.reference, "spo_ppo.py"], per_step["current", "spo_ppo.py"]
        lines.append(f"| `{script}` | {b:.0f} | {b / b_spo:.2f}× | {n:.0f} | {n / n_spo:.2f}× | {b / n:.2f}× |")
    return "\n".join(lines) + "\n"

# The learned attacks (learned_attack.py sarl / paad): whole runs of the script as it is now and as it was at --against,
# in turn, with the same seed, so that they must also train the same adversary bit for bit (checked: "same weights"); their
# SPS (wall time of the training loop, as printed) and steps per CPU second of the training loop (the checkpoint's
# train_cpu_seconds: on a loaded machine the steadier of the two). Then the parts of a step, timed in this process as in
# profile(): each version's env stack, adversary, perturbation and victim in throughput.py's copy of the rollout loop, and its
# minibatch update (update_us with the learned attack's 512-sample minibatches and Adam).

def python_files(commit):
    """The top-level .py files of `commit` (learned_attack.py and the modules and training scripts it imports)."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", commit], capture_output=True, text=True, cwd=REPO)
    if listed.returncode != 0:
        raise SystemExit(f"error: cannot read commit {commit} (--against): {listed.stderr.strip()}")
    return [name for name in listed.stdout.split() if name.endswith(".py")]


def learned_run(code_dir, attack, victim, total_timesteps):
    """One seeded learned_attack.py run of the code in code_dir: its SPS, its steps per CPU second, the adversary's weights."""
    out = tempfile.mkdtemp(prefix="bench_learned_")
    try:
        proc = subprocess.run([sys.executable, os.path.join(code_dir, "learned_attack.py"), attack, victim, "--total-timesteps",
                               str(total_timesteps), "--output", os.path.join(out, "adversary.pt"), "--run-dir", os.path.join(out, "tb")],
                              capture_output=True, text=True, cwd=code_dir)
        if proc.returncode != 0:
            raise SystemExit(f"error: {code_dir}/learned_attack.py {attack} failed: {proc.stderr.strip().splitlines()[-1:]}")
        adversary = torch.load(os.path.join(out, "adversary.pt"), weights_only=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    sps = float(re.findall(r"SPS (\d+)", proc.stdout)[-1])
    return sps, adversary["global_step"] / adversary["train_cpu_seconds"], adversary["adversary"]


def import_learned(code_dir):
    """learned_attack.py of code_dir imported with that directory's attacks, evaluate and spo_ppo, not this process's;
    returns it and its spo_ppo."""
    local = ["learned_attack", "attacks", "evaluate", "spo_ppo"]
    saved = {name: sys.modules.pop(name) for name in local if name in sys.modules}
    sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module("learned_attack")
        return module, sys.modules["spo_ppo"]
    finally:
        sys.path.remove(code_dir)
        for name in local:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def learned_parts(code, spo, attack, victim, ckpt, steps, before):
    """{part: CPU us} of one version of a learned attack (code: its learned_attack module, spo: its spo_ppo; `before`: the
    update lines of --against) at its defaults: the rollout loop of train() for `steps` env steps, then its update."""
    args = (code.SarlArgs if attack == "sarl" else code.PaadArgs)(victim="-")
    eps = code.evaluate.default_epsilon(ckpt["env_id"])
    envs = gym.vector.SyncVectorEnv([code.make_env(ckpt["env_id"], ckpt["obs_rms"], args.gamma) for _ in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, act_dim = envs.single_observation_space.shape[0], code.adversary_action_dim(args, ckpt)
    torch.manual_seed(1)
    adversary = code.Agent(obs_dim, act_dim, args.hidden_size, args.init_logstd)
    n = steps // args.num_envs
    buffers = {"obs": np.zeros((n, args.num_envs, obs_dim), np.float32), "actions": np.zeros((n, args.num_envs, act_dim), np.float32),
               **{k: np.zeros((n, args.num_envs), np.float32) for k in ("logprobs", "values", "rewards", "dones")}}
    next_obs = envs.reset(seed=1)[0].astype(np.float32)
    times = np.zeros(4)
    with torch.inference_mode():
        for step in range(n):
            t0 = time.process_time()
            buffers["obs"][step] = next_obs
            s = torch.from_numpy(next_obs)
            action, logprob, _, value = adversary.get_action_and_value(s)
            buffers["values"][step], buffers["actions"][step], buffers["logprobs"][step] = value.flatten().numpy(), action.numpy(), logprob.numpy()
            t1 = time.process_time()
            s_adv = code.perturb(victim, s, eps, action, args)
            t2 = time.process_time()
            victim_action = victim.actor_mean(s_adv).numpy()
            t3 = time.process_time()
            next_obs, reward, terminations, truncations, infos = envs.step(victim_action)
            next_obs = next_obs.astype(np.float32)
            buffers["dones"][step], buffers["rewards"][step] = np.logical_or(terminations, truncations), reward
            times += np.diff([t0, t1, t2, t3, time.process_time()])
    envs.close()
    per_step = times / (n * args.num_envs) * 1e6
    what = "s + eps hardtanh(a)" if attack == "sarl" else f"the actor, {args.actor_steps} gradient steps"
    parts = {"rollout: adversary forward (sample, log-prob, value; to the buffers)": per_step[0],
             f"rollout: perturbation ({what})": per_step[1], "rollout: victim forward": per_step[2],
             f"rollout: env step ({args.num_envs} sub-envs, per env step)": per_step[3], "rollout: one env step": per_step.sum()}
    flat = {k: v.reshape(n * args.num_envs, 1, -1) if v.ndim == 3 else v.reshape(n * args.num_envs, 1) for k, v in buffers.items()}
    adam = () if before else (("foreach", True),)
    minibatch = update_us(spo, adversary, flat, before, args.update_epochs, args.num_envs * args.num_steps // args.num_minibatches, args.clip_coef, adam)
    parts[f"one minibatch update ({args.num_envs * args.num_steps // args.num_minibatches} samples)"] = minibatch
    parts["the update per env step"] = minibatch * args.update_epochs * args.num_minibatches / (args.num_envs * args.num_steps)
    parts["one training step (rollout step + update per env step)"] = parts["rollout: one env step"] + parts["the update per env step"]
    return parts


def learned(args):
    import evaluate

    attacks = args.learned.split(",")
    if not attacks or not set(attacks) <= {"sarl", "paad"}:
        raise SystemExit(f"error: --learned takes sarl and/or paad, comma-separated, got {args.learned!r}")
    if args.profile_steps < 512:
        raise SystemExit(f"error: --profile-steps must be at least 512 (one minibatch of the learned attacks), got {args.profile_steps}")
    victim_path = os.path.abspath(args.victim)
    victim, ckpt = evaluate.load_checkpoint(victim_path)
    code_dir, _ = reference_code(args.against, python_files(args.against))
    try:
        versions = {args.against: code_dir, "now": REPO}
        modules = {args.against: import_learned(code_dir), "now": import_learned(REPO)}
        runs = {(v, a): [] for v in versions for a in attacks}
        parts = {(v, a): [] for v in versions for a in attacks}
        for name in versions:  # a warm-up, not timed: the first pass in a process pays for torch's lazy initialisation
            learned_parts(*modules[name], attacks[0], victim, ckpt, 512, name == args.against)
        for repeat in range(args.repeats):  # in turn, so a slow spell of the machine hits both versions alike; the order
            order = list(versions) if repeat % 2 == 0 else list(versions)[::-1]  # alternates (A B, B A, ...) against a drift
            for attack in attacks:
                for name in order:
                    runs[name, attack].append(learned_run(versions[name], attack, victim_path, args.total_timesteps))
                    print(f"  {name:8s} {attack}: {runs[name, attack][-1][0]:5.0f} SPS, {runs[name, attack][-1][1]:5.0f} steps per CPU second", flush=True)
                for name in order:
                    parts[name, attack].append(learned_parts(*modules[name], attack, victim, ckpt, args.profile_steps, name == args.against))
                    print(f"  {name:8s} {attack} parts: " + ", ".join(f"{v:.0f}" for v in parts[name, attack][-1].values()), flush=True)
    finally:
        shutil.rmtree(code_dir)
    lines = ["### Measured by `throughput.py --learned`", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"one torch thread. Command: `python throughput.py --learned {args.learned} --against {args.against} --total-timesteps {args.total_timesteps} "
             f"--repeats {args.repeats} --profile-steps {args.profile_steps}` (victim `{args.victim}`). Each repeat runs `learned_attack.py` "
             f"as it was at {args.against} and as it is now, in turn (the order alternating), {args.total_timesteps} steps at its defaults "
             "(seed 1). SPS is the one it prints (wall time of the training loop); CPU is steps per CPU second of the same loop "
             "(`train_cpu_seconds`). Other jobs on the machine only ever slow a run down, so next to the median of the per-pair ratios "
             "we give the ratio of the two versions' fastest runs. Same weights: every run of both versions trained the same "
             "adversary, bit for bit.", "",
             f"| attack | SPS before ({args.against}) | SPS now | CPU before | CPU now | speed-up, median of pairs (CPU) | fastest vs fastest (CPU) | same weights |",
             "|---|---|---|---|---|---|---|---|"]
    for attack in attacks:
        before, now = runs[args.against, attack], runs["now", attack]
        same = all(all(torch.equal(w[k], before[0][2][k]) for k in w) for w in [r[2] for r in before + now])
        pairs = [n[1] / b[1] for b, n in zip(before, now)]
        listed = lambda rs, i: ", ".join(f"{r[i]:.0f}" for r in rs)
        lines.append(f"| {attack} | {listed(before, 0)} | {listed(now, 0)} | {listed(before, 1)} | {listed(now, 1)} | {float(np.median(pairs)):.2f}× "
                     f"({', '.join(f'{p:.2f}' for p in pairs)}) | {max(r[1] for r in now) / max(r[1] for r in before):.2f}× | {'yes' if same else 'NO'} |")
    lines += ["", f"The parts of a step, CPU µs per env step unless said otherwise, the fastest of {args.repeats} (throughput.py's copy of the rollout "
              f"loop, {args.profile_steps} env steps, then 10 epochs of minibatch updates on the batch it collected):", ""]
    for attack in attacks:
        fastest = {v: {k: min(p[k] for p in parts[v, attack]) for k in parts[v, attack][0]} for v in versions}
        lines += [f"| {attack}: part | before ({args.against}), µs | now, µs | speed-up |", "|---|---|---|---|"]
        lines += [f"| {k} | {fastest[args.against][k]:.0f} | {fastest['now'][k]:.0f} | {fastest[args.against][k] / fastest['now'][k]:.2f}× |" for k in fastest["now"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    args = tyro.cli(Args)
    mujoco.set_mju_user_warning(print_mujoco_warning)
    if args.total_timesteps < 2048 or args.total_timesteps % 2048:
        raise SystemExit("error: --total-timesteps must be a positive multiple of 2048 (whole PPO iterations)")
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(1)
    if args.learned or args.profile:  # instead of the training table, a section of its own in docs/benchmarks.md
        print(f"learned attacks: learned_attack.py now and at {args.against}, in turn" if args.learned
              else f"profile: {args.env_id}, the current code and {args.reference}'s, in turn", flush=True)
        report = learned(args) if args.learned else profile(args)
        print("\n" + report)
        write_section(args.output, "throughput.py " + ("--learned" if args.learned else "--profile"), report,
                      new_file_head="# Benchmarks\n")
        print(f"wrote {args.output}")
        raise SystemExit(0)
    lines = [f"## Measured by throughput.py", "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, one torch thread, one job at a time. Command: "
             f"`python throughput.py --total-timesteps {args.total_timesteps} --repeats {args.repeats}" + (f" --anchor <path>/{os.path.basename(args.anchor)}" if args.anchor else "")
             + (f" --checkpoint {args.checkpoint}`" if args.checkpoint else "`"), ""]

    print(f"training benchmark: {args.total_timesteps} steps on {args.env_id} per script", flush=True)
    base = cleanrl_baseline(args.env_id, args.total_timesteps)
    print(f"  cleanrl-semantics baseline  {base:7.0f} SPS", flush=True)
    scripts = [s for s in TRAINING_SCRIPTS if os.path.exists(os.path.join(REPO, s))]
    runs = {s: [] for s in scripts}
    anchor_runs = []
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every script alike
        if args.anchor:  # right before spo_ppo.py, so that each pair meets the machine in the same state
            anchor_runs.append(anchor_sps(args.anchor, args.total_timesteps))
            print(f"  {'CleanRL (anchor)':27s} {anchor_runs[-1]:7.0f} SPS", flush=True)
        for script in scripts:
            runs[script].append(script_sps(script, args.env_id, args.total_timesteps))
            print(f"  {script:27s} {runs[script][-1]:7.0f} SPS", flush=True)
    sps = {s: float(np.median(v)) for s, v in runs.items()}
    lines += [f"### Training ({args.env_id}, {args.total_timesteps} steps each, median of {args.repeats} run(s))", "",
              "| script | SPS | wall time vs spo_ppo.py | speed vs CleanRL-semantics loop |", "|---|---|---|---|",
              f"| CleanRL-semantics loop (in throughput.py) | {base:.0f} | {sps['spo_ppo.py'] / base:.2f}× | 1.00× |"]
    if anchor_runs:
        cleanrl = float(np.median(anchor_runs))
        lines.append(f"| CleanRL's own script (`{os.path.basename(args.anchor)}`, {os.environ.get('CLEANRL_ENV_ID', 'Hopper-v4')}) | {cleanrl:.0f} | "
                     f"{sps['spo_ppo.py'] / cleanrl:.2f}× | {cleanrl / base:.2f}× |")
    lines += [f"| `{s}` | {v:.0f} | {sps['spo_ppo.py'] / v:.2f}× | {v / base:.2f}× |" for s, v in sps.items()]
    if anchor_runs:
        pairs = ", ".join(f"{s:.0f} vs {a:.0f}" for s, a in zip(runs["spo_ppo.py"], anchor_runs))
        lines += ["", f"`spo_ppo.py` vs CleanRL's own script, pair by pair (CleanRL run just before SPO): {pairs} SPS; "
                  f"ratio of the medians {sps['spo_ppo.py'] / cleanrl:.2f}×."]

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
    write_section(args.output, "throughput.py", report, new_file_head="# Benchmarks\n")  # only the measured section: the prose around it stays
    print(f"wrote {args.output}")
