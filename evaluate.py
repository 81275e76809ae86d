"""Evaluate a checkpoint of any training script (spo, arpo, barpo, sappo, radial, wocar): natural return and return under attacks.

    python evaluate.py runs/<run>/agent.pt                       # natural, 50 deterministic episodes
    python evaluate.py runs/<run>/agent.pt --attacks all         # natural + every attack, worst case
    python evaluate.py runs/<run>/agent.pt --attacks mad --capture-video

Protocol (docs/design.md §5): the victim acts with its mean action on observations normalised with the statistics
stored in the checkpoint (frozen, clipped to ±10, exactly as in training); an attack replaces each
observation by a point of the l_inf ball of radius eps around it (eps in normalised units, default per
env: attacks.DEFAULT_EPSILON); the environment evolves on the true state.
All episodes run in lockstep in one vector env, so each attack is one batched call per time step.

Output: a markdown table (mean ± std per attack, worst case = minimum over attacks, robustness =
(worst - natural) / natural) and the same as JSON next to the checkpoint: eval_eps<eps>.json for --attacks all,
eval_eps<eps>_<attacks>.json for a subset (e.g. _random-critic), eval_eps<eps>_natural.json without attacks.

Robust Sarsa (rs) trains a Q^pi of the frozen victim first (cached next to the checkpoint as
rs_q_*.pt and reused); see `train_robust_sarsa` for the procedure and what it approximates.

The learned attacks SA-RL (sarl) and PA-AD (paad) use an adversary trained beforehand against this
checkpoint by `learned_attack.py sarl` / `learned_attack.py paad` and saved next to it as sarl_eps<eps>.pt /
paad_eps<eps>.pt (an adversary trained against another version of the checkpoint, i.e. another sha1, is ignored). It is
evaluated twice, with its mean action (as the literature does) and with actions sampled from its policy
(the stochastic policy it was trained as), and the stronger is reported. `--attacks all` includes them
when present and prints the command that trains a missing one; `--train-learned` trains the missing ones
first, each by running learned_attack.py in a subprocess (default budgets: 1M steps, about 5 min each of one
core for Hopper; TensorBoard logs next to the checkpoint in <attack>_eps<eps>_tb/). It never replaces an adversary
that is there: a file it cannot use (trained against another sha1, unreadable) is a one-line error; move it aside,
or retrain it with learned_attack.py's --overwrite.

Every input is checked before the first episode: the flags (eps and rs_eps within the observation clip
[0, 10], MAD's betas finite), the checkpoint, a cached Robust Sarsa model, and the output path (its directory
must exist). The JSON is written to a temporary file of its own (tempfile.mkstemp) and moved into place.
"""
import hashlib
import importlib.util
import json
import math
import os
import shlex
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

import attacks
from spo_ppo import Agent, print_mujoco_warning

DEFAULT_EPS = attacks.DEFAULT_EPSILON  # per env family, the literature's (attacks.py)
OBS_CLIP = 10.0  # normalised observations are clipped to +-OBS_CLIP (the training scripts' clip, `obs_clip` in checkpoints)
ATTACKS = ["random", "critic", "mad", "rs", "sarl", "paad"]
LEARNED_ATTACKS = ["sarl", "paad"]  # need an adversary trained by learned_attack.py


@dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]
    """path to an agent.pt written by one of the training scripts"""
    attacks: str = "none"
    """comma-separated list of attacks (random, critic, mad, rs, sarl, paad) or 'all'; natural is always evaluated"""
    epsilon: Optional[float] = None
    """l_inf radius in normalised observation units (default per env: attacks.DEFAULT_EPSILON)"""
    num_episodes: int = 50
    """episodes per attack, run in lockstep (one sub-env each)"""
    attack_steps: int = 10
    """PGD / SGLD steps of the gradient attacks (step size epsilon / attack_steps); paad uses the steps it was trained with"""
    mad_betas: str = "1.0,1e-5"
    """SGLD temperatures of the MAD attack, comma-separated; each is evaluated and the stronger reported
    (SA-PPO's test-time value is 1, BARPO's training regulariser 1e-5)"""
    stochastic: bool = False
    """sample actions from the policy instead of using the mean action"""
    seed: int = 12345
    """seed of the evaluation environments and of the attacks' randomness"""
    env_id: Optional[str] = None
    """environment to evaluate on (default: the checkpoint's; a different one is refused)"""
    output: Optional[str] = None
    """where to write the JSON results (default: next to the checkpoint)"""
    video_dir: Optional[str] = None
    """where --capture-video writes (default: videos/<name of the checkpoint's directory>)"""
    capture_video: bool = False
    """record the first episodes of every evaluated attack to videos/ (needs libosmesa6, MUJOCO_GL=osmesa)"""
    video_episodes: int = 2
    """how many episodes per attack to record"""
    video_frames: int = 300
    """at most this many frames per recorded episode (about 0.25 s per 480x480 frame when rendering)"""
    video_size: int = 240
    """width and height of the video frames in pixels"""
    threads: int = 1
    """torch CPU threads"""

    # Robust Sarsa
    rs_steps: int = 50000
    """environment steps of victim rollouts used to fit each Robust Sarsa Q"""
    rs_epochs: int = 20
    """passes of Sarsa TD training over the collected rollouts"""
    rs_eps: float = 0.02
    """radius of the robustness penalty of the Q function (normalised obs units; actions in their own units)"""
    rs_reg: float = 0.1
    """weight of the robustness penalty"""
    rs_grid: bool = False
    """train the literature's grid of (rs_eps, rs_reg) models and report the worst result"""

    # Learned attacks (SA-RL, PA-AD)
    train_learned: bool = False
    """train the missing sarl / paad adversaries first (learned_attack.py in a subprocess, with its default budget)"""
    learned_args: str = ""
    """extra flags for learned_attack.py when --train-learned trains, e.g. --learned-args='--grid' (mind the =)"""


REPO = os.path.dirname(os.path.abspath(__file__))


def code_commit(*files):
    """The commit the code runs from, with '+dirty' if any of `files` differs from it (None outside a git checkout)."""
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", *files) else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def script_agent_class(ckpt, path):
    """The Agent class of the training script that wrote the checkpoint, so that a changed network (another
    activation, another layer) is evaluated as changed. The script is the one of that name in this repository,
    else the file it was run from; checkpoints from before scripts were recorded name only their algorithm."""
    script = ckpt.get("script") or f"{ckpt.get('algo', 'spo')}_ppo.py"
    candidates = [os.path.join(REPO, os.path.basename(str(script)))] + ([ckpt["script_path"]] if ckpt.get("script_path") else [])
    file = next((f for f in candidates if os.path.isfile(f)), None)
    if file is None:
        raise SystemExit(f"error: {path!r} was written by {script}, which is neither in {REPO} nor at "
                         f"{ckpt.get('script_path', 'a recorded path')}; cannot rebuild its network")
    name = f"_victim_{os.path.splitext(os.path.basename(file))[0]}"
    if name not in sys.modules or getattr(sys.modules[name], "__file__", None) != file:
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(file))  # its own imports (attacks.py) resolve next to it first
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise SystemExit(f"error: cannot import {file} to rebuild the network of {path!r} ({type(e).__name__}: {e})")
        finally:
            sys.path.remove(os.path.dirname(file))
        sys.modules[name] = module
    if not isinstance(getattr(sys.modules[name], "Agent", None), type):
        raise SystemExit(f"error: {file} defines no Agent class; cannot rebuild the network of {path!r}")
    return sys.modules[name].Agent, file


def load_checkpoint(path, env_id=None):
    """Load a checkpoint and check it against the env; every problem is one clear SystemExit line."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path!r} does not exist")
    try:  # weights_only: a checkpoint cannot run code; TorchVersion is a str subclass some writers stored
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: {path!r} is not a readable checkpoint ({type(e).__name__})")
    if not isinstance(ckpt, dict):
        raise SystemExit(f"error: {path!r} is not a checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    missing = {"env_id", "obs_shape", "action_shape", "hidden_size", "agent", "obs_rms"} - set(ckpt)
    if missing:
        raise SystemExit(f"error: {path!r} is not a self-describing checkpoint (missing {sorted(missing)})")
    env_id = env_id or ckpt["env_id"]
    if env_id != ckpt["env_id"]:
        raise SystemExit(f"error: checkpoint was trained on {ckpt['env_id']}, not {env_id}")
    try:
        spec_env = gym.make(env_id)
    except gym.error.Error as e:
        raise SystemExit(f"error: unknown env id {env_id!r}: {e}")
    obs_shape, act_shape = list(spec_env.observation_space.shape), list(spec_env.action_space.shape)
    spec_env.close()
    if obs_shape != list(ckpt["obs_shape"]) or act_shape != list(ckpt["action_shape"]):
        raise SystemExit(
            f"error: checkpoint expects obs {ckpt['obs_shape']} / action {ckpt['action_shape']}, "
            f"but {env_id} has obs {obs_shape} / action {act_shape}"
        )
    rms = ckpt["obs_rms"]
    try:
        rms_ok = all(list(rms[k].shape) == obs_shape and bool(torch.isfinite(rms[k]).all()) for k in ("mean", "var"))
        rms_ok = rms_ok and math.isfinite(rms["count"]) and rms["count"] > 0
    except (TypeError, KeyError, AttributeError):
        rms_ok = False
    if not rms_ok:
        raise SystemExit(f"error: {path!r} has no usable observation statistics (obs_rms needs finite mean and var of shape {obs_shape})")
    script_agent, script_file = script_agent_class(ckpt, path)
    try:
        agent = script_agent(int(np.prod(obs_shape)), int(np.prod(act_shape)), int(ckpt["hidden_size"]))
        agent.load_state_dict(ckpt["agent"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise SystemExit(f"error: {path!r}: its networks do not fit the Agent of {script_file} (hidden_size {ckpt['hidden_size']!r}; "
                         f"{type(e).__name__}: {str(e).strip().splitlines()[0][:150] if str(e).strip() else ''})")
    if ckpt.get("network") is not None and ckpt["network"] != repr(agent):  # same weights' shapes, other layers
        raise SystemExit(f"error: {path!r} was trained with another network than the Agent of {script_file} now builds "
                         "(an activation or layer changed since?); restore that script or retrain")
    agent.eval()
    for p in agent.parameters():
        p.requires_grad_(False)
    return agent, ckpt


def make_eval_env(env_id, obs_rms, render=None):
    """The training observation pipeline with the normaliser frozen at the checkpoint's statistics.

    render: None, or (video_folder, name_prefix, size, max_frames) to record this sub-env's first episode."""

    def thunk():
        if render is None:
            env = gym.make(env_id)
        else:
            folder, prefix, size, max_frames = render
            env = gym.make(env_id, render_mode="rgb_array", width=size, height=size)
            env = gym.wrappers.RecordVideo(
                env, folder, episode_trigger=lambda ep: ep == 0, name_prefix=prefix, video_length=max_frames,
                disable_logger=True,
            )
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env.obs_rms.mean = obs_rms["mean"].numpy().copy()
        env.obs_rms.var = obs_rms["var"].numpy().copy()
        env.obs_rms.count = float(obs_rms["count"])
        env.update_running_mean = False
        env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -OBS_CLIP, OBS_CLIP), env.observation_space)
        return env

    return thunk


def run_episodes(agent, env_id, obs_rms, num_episodes, perturb=None, stochastic=False, seed=0, video=None):
    """One episode per sub-env, all in lockstep. perturb(obs_batch) -> obs_batch is applied at every step.

    Returns the raw (unnormalised) episode returns and lengths, each of shape (num_episodes,)."""
    thunks = [
        make_eval_env(env_id, obs_rms, None if video is None or i >= video[0] else (video[1], f"{video[2]}-ep{i}", *video[3:]))
        for i in range(num_episodes)
    ]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, dtype=np.int64)
    running = np.ones(num_episodes, dtype=bool)
    while running.any():
        x = torch.as_tensor(obs, dtype=torch.float32)
        if perturb is not None:
            x = perturb(x)
        with torch.no_grad():
            mean = agent.actor_mean(x)
            action = mean if not stochastic else mean + agent.actor_logstd.exp() * torch.randn_like(mean)
        obs, reward, term, trunc, _ = envs.step(action.numpy())
        returns += reward * running
        lengths += running
        running &= ~(term | trunc)  # a finished sub-env auto-resets; its later steps are ignored
    envs.close()
    return returns, lengths


class QNetwork(nn.Module):
    """Q(s, a) of the frozen victim, for the Robust Sarsa attack (s: normalised obs, a: action)."""

    def __init__(self, obs_dim, act_dim, hidden_size=64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + act_dim, hidden_size), nn.Tanh(),
            nn.Linear(hidden_size, hidden_size), nn.Tanh(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, obs, action):
        return self.net(torch.cat([obs, action], dim=-1))


def collect_sarsa_data(agent, env_id, obs_rms, steps, num_envs=20, seed=0):
    """Roll out the frozen victim (stochastic, so Q sees actions around the mean) and return Sarsa tuples
    (s, a, r, s', a', terminal) over consecutive steps of the same episode; truncated steps are dropped."""
    envs = gym.vector.SyncVectorEnv(
        [make_eval_env(env_id, obs_rms) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    horizon = max(2, steps // num_envs)
    obs_buf, act_buf = [], []
    rew_buf, term_buf, done_buf = np.zeros((horizon, num_envs)), np.zeros((horizon, num_envs)), np.zeros((horizon, num_envs))
    obs, _ = envs.reset(seed=seed)
    for t in range(horizon):
        x = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            mean = agent.actor_mean(x)
            action = mean + agent.actor_logstd.exp() * torch.randn_like(mean)
        obs_buf.append(x)
        act_buf.append(action)
        obs, rew_buf[t], term, trunc, _ = envs.step(action.numpy())
        term_buf[t], done_buf[t] = term, term | trunc
    envs.close()
    obs_t, act_t = torch.stack(obs_buf), torch.stack(act_buf)
    # transition (t, i) -> (t+1, i) is usable if the episode went on, or if it terminated (target = r)
    valid = (done_buf[:-1] == 0) | (term_buf[:-1] == 1)
    v = torch.as_tensor(valid)
    as_t = lambda a: torch.as_tensor(a[:-1], dtype=torch.float32)[v]
    return obs_t[:-1][v], act_t[:-1][v], as_t(rew_buf), obs_t[1:][v], act_t[1:][v], as_t(term_buf)


def train_robust_sarsa(agent, data, rs_eps, rs_reg, epochs, gamma=0.99, batch_size=256, lr=1e-3, pgd_steps=3, seed=0):
    """Fit Q^pi by Sarsa TD(0) with a robustness penalty, returning (q_net, TD loss at start and per epoch).

    loss = (Q(s,a) - r - gamma (1-term) Q(s',a'))^2 + rs_reg * max_{(s~,a~) in B_rs_eps(s,a)} (Q(s~,a~) - Q(s,a))^2.
    Approximation: SA-PPO bounds the inner max with convex relaxations (auto_LiRPA); we approximate it with a
    `pgd_steps`-step PGD from a random start. The ball covers both the state and the action input: Robust Sarsa
    asks that Q not move under perturbations of s, the literature's code regularises the action input,
    and the attack differentiates through the action, so both are smoothed."""
    torch.manual_seed(seed)
    s, a, r, s2, a2, term = data
    q_net = QNetwork(s.shape[1], a.shape[1])
    optimizer = torch.optim.Adam(q_net.parameters(), lr=lr)
    reward_scale = float(r.abs().mean()) + 1e-8  # Q is learned in units of the mean |reward|, then rescaled
    r = r / reward_scale
    with torch.no_grad():  # start at the mean discounted return of geometric episodes: TD targets on scale
        q_net.net[-1].bias.fill_(float(r.mean()) / (1 - gamma * (1 - float(term.mean()))))
    def td_loss_of_dataset():
        with torch.no_grad():
            target = r + gamma * (1 - term) * q_net(s2, a2).squeeze(-1)
            return float(((q_net(s, a).squeeze(-1) - target) ** 2).mean())

    history = [td_loss_of_dataset()]  # TD loss over the whole data set: before training, then after each epoch
    for epoch in range(epochs):
        perm = torch.randperm(len(s))
        for start in range(0, len(s), batch_size):
            idx = perm[start : start + batch_size]
            sa = torch.cat([s[idx], a[idx]], dim=-1)
            with torch.no_grad():
                target = r[idx] + gamma * (1 - term[idx]) * q_net(s2[idx], a2[idx]).squeeze(-1)
            q = q_net.net(sa).squeeze(-1)
            td_loss = ((q - target) ** 2).mean()
            loss = td_loss
            if rs_reg > 0 and rs_eps > 0:
                q_clean = q.detach()
                x = sa + rs_eps * (2 * torch.rand_like(sa) - 1)
                for _ in range(pgd_steps):
                    x.requires_grad_(True)
                    (g,) = torch.autograd.grad(((q_net.net(x).squeeze(-1) - q_clean) ** 2).sum(), x)
                    x = attacks.project(x.detach() + rs_eps / pgd_steps * 2 * g.sign(), sa, rs_eps)
                loss = loss + rs_reg * ((q_net.net(x).squeeze(-1) - q) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history.append(td_loss_of_dataset())
    with torch.no_grad():  # fold the reward scale back into the last layer: Q in raw return units
        q_net.net[-1].weight.mul_(reward_scale)
        q_net.net[-1].bias.mul_(reward_scale)
    for p in q_net.parameters():
        p.requires_grad_(False)
    return q_net, history


def file_sha1(path):
    """Content hash of a checkpoint: trained attack models (RS's Q, SA-RL, PA-AD) are keyed by their victim's."""
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def write_atomically(path, save):
    """Write a file by save(temporary path) and move it into place: a reader never sees half a file, a failed write
    leaves `path` as it was, and the temporary file has a name of its own (tempfile.mkstemp, in path's directory), so
    two writers of the same path never share one. The file gets the permissions of an ordinary new file (umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def output_problem(path):
    """Why `path` cannot be written as an output file (None if it can): checked before the work that produces it."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{path} is a directory; give a file name"
    if not os.path.isdir(directory):
        return f"the directory of {path} does not exist; create it first"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory of {path} is not writable"
    return None


def check_epsilon(eps, flag="--epsilon"):
    """An attack radius must be a number in [0, OBS_CLIP]: beyond the observation clip a ball is no constraint at all."""
    if not 0 <= eps <= OBS_CLIP:  # nan fails both
        raise SystemExit(f"error: {flag} must be in [0, {OBS_CLIP:g}] (normalised observations are clipped to ±{OBS_CLIP:g}), got {eps}")


def robust_sarsa_paths(ckpt_path, args):
    """((rs_eps, rs_reg), cache path) of every Q model of the RS attack."""
    grid = [(e, r) for e in (0.02, 0.05, 0.1) for r in (0.1, 1.0)] if args.rs_grid else [(args.rs_eps, args.rs_reg)]
    directory = os.path.dirname(os.path.abspath(ckpt_path))
    return [((e, r), os.path.join(directory, f"rs_q_eps{e:g}_reg{r:g}_steps{args.rs_steps}_ep{args.rs_epochs}.pt")) for e, r in grid]


def read_robust_sarsa_cache(path, obs_dim, act_dim):
    """(victim sha1, Q network) of a cached Robust Sarsa model; a file that is not one is a one-line error (it is
    never replaced: delete it to train the model again)."""
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        q_net = QNetwork(obs_dim, act_dim)
        q_net.load_state_dict(cached["q_net"])
        return str(cached["victim_sha1"]), q_net
    except Exception as e:
        raise SystemExit(f"error: {path} is not a readable Robust Sarsa cache ({type(e).__name__}); delete it to train the Q model again")


def robust_sarsa_models(agent, ckpt_path, ckpt, args, digest):
    """The Q models of the RS attack: cached next to the checkpoint (keyed by its sha1 `digest`) or trained now."""
    obs_dim, act_dim = int(np.prod(ckpt["obs_shape"])), int(np.prod(ckpt["action_shape"]))
    data, models = None, []
    for (rs_eps, rs_reg), path in robust_sarsa_paths(ckpt_path, args):
        name = os.path.basename(path)
        if os.path.isfile(path):
            victim_sha1, q_net = read_robust_sarsa_cache(path, obs_dim, act_dim)
            if victim_sha1 == digest:
                q_net.requires_grad_(False)
                print(f"  rs: reusing {name}")
                models.append(((rs_eps, rs_reg), q_net))
                continue
        t0 = time.time()
        if data is None:
            data = collect_sarsa_data(agent, ckpt["env_id"], ckpt["obs_rms"], args.rs_steps, seed=args.seed + 1)
        q_net, history = train_robust_sarsa(agent, data, rs_eps, rs_reg, args.rs_epochs, seed=args.seed)
        cache = {"q_net": q_net.state_dict(), "victim_sha1": digest, "td_loss": history, "rs_eps": rs_eps, "rs_reg": rs_reg}
        write_atomically(path, lambda tmp: torch.save(cache, tmp))  # a parallel evaluation never reads a half-written cache
        print(f"  rs: trained {name} on {len(data[0])} transitions in {time.time() - t0:.0f} s (TD loss {history[0]:.3f} -> {history[-1]:.3f})")
        models.append(((rs_eps, rs_reg), q_net))
    return models


def adversary_path(name, ckpt_path, eps):
    """Where learned_attack.py saves the sarl / paad adversary of this checkpoint and eps, and where it is looked for."""
    return os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), f"{name}_eps{eps:g}.pt")


def load_learned_adversary(name, ckpt_path, eps, victim_sha1):
    """The sarl / paad adversary trained for this checkpoint and eps: ((network, its checkpoint), None), or
    (None, why not) if there is no usable one next to the checkpoint."""
    path = adversary_path(name, ckpt_path, eps)
    fname = os.path.basename(path)
    if not os.path.isfile(path):
        return None, f"no {fname} next to the checkpoint"
    try:
        adv = torch.load(path, map_location="cpu", weights_only=True)
        adversary = Agent(adv["obs_dim"], adv["action_dim"], adv["hidden_size"])
        adversary.load_state_dict(adv["adversary"])
        trained_for = (adv["attack"], float(adv["epsilon"]), adv["victim_sha1"])
    except Exception as e:
        return None, f"{fname} is not a readable adversary checkpoint ({type(e).__name__})"
    if trained_for[2] != victim_sha1:
        return None, f"{fname} was trained against another version of this checkpoint (sha1 differs)"
    if trained_for[0] != name or abs(trained_for[1] - eps) > 1e-9:
        return None, f"{fname} is a {trained_for[0]} adversary for eps = {trained_for[1]:g}, not {name} for eps = {eps:g}"
    adversary.eval()
    adversary.requires_grad_(False)
    adv["path"] = path
    return (adversary, adv), None


def adversary_action(net, x, sampled):
    """A learned adversary's action at the (normalised) states x: its mean, or a sample of its Gaussian policy."""
    mean = net.actor_mean(x)
    return mean + net.actor_logstd.exp() * torch.randn_like(mean) if sampled else mean


def train_learned_adversary(name, ckpt_path, eps, extra_args):
    """Train the missing sarl / paad adversary with learned_attack.py's defaults (+ extra_args), in a process of its
    own: learned_attack.py imports this file, and this file never imports it."""
    tb_dir = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), f"{name}_eps{eps:g}_tb")
    script = os.path.join(REPO, "learned_attack.py")
    proc = subprocess.run([sys.executable, script, name, ckpt_path, "--epsilon", repr(eps), "--run-dir", tb_dir, *shlex.split(extra_args)])
    if proc.returncode != 0:  # learned_attack.py has printed its own error line
        raise SystemExit(proc.returncode)


def default_epsilon(env_id):
    for prefix, eps in DEFAULT_EPS.items():
        if env_id.startswith(prefix):
            return eps
    raise SystemExit(f"error: no default epsilon for {env_id}; pass --epsilon")


def check_video_backend():
    """Fail early with one line if MuJoCo cannot render offscreen."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    try:
        import moviepy  # noqa: F401  (RecordVideo writes mp4 files through moviepy)
    except ImportError:
        raise SystemExit("error: --capture-video needs moviepy: pip install moviepy")
    try:
        env = gym.make("Hopper-v5", render_mode="rgb_array", width=64, height=64)
        env.reset(seed=0)
        env.render()
        env.close()
    except Exception as e:
        print(f"error: --capture-video cannot render offscreen ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "install libosmesa6 (apt-get install libosmesa6) and set MUJOCO_GL=osmesa", file=sys.stderr, flush=True)
        os._exit(1)  # not SystemExit: the half-built renderer's destructor would print a traceback on the way out


if __name__ == "__main__":
    args = tyro.cli(Args)
    mujoco.set_mju_user_warning(print_mujoco_warning)
    # every flag is checked before any work (and before anything is written)
    if args.epsilon is not None:
        check_epsilon(args.epsilon)
    check_epsilon(args.rs_eps, "--rs-eps")
    for flag, value in (("--num-episodes", args.num_episodes), ("--attack-steps", args.attack_steps), ("--threads", args.threads),
                        ("--rs-steps", args.rs_steps), ("--rs-epochs", args.rs_epochs), ("--video-episodes", args.video_episodes),
                        ("--video-frames", args.video_frames), ("--video-size", args.video_size)):
        if value < 1:
            raise SystemExit(f"error: {flag} must be >= 1, got {value}")
    if not 0 <= args.rs_reg < math.inf:
        raise SystemExit(f"error: --rs-reg must be a finite number >= 0, got {args.rs_reg}")
    torch.set_num_threads(args.threads)
    names = list(ATTACKS) if args.attacks == "all" else [a for a in args.attacks.split(",") if a and a != "none"]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"error: unknown attack(s) {unknown}; choose from {ATTACKS} or 'all'")
    try:
        mad_betas = [float(b) for b in args.mad_betas.split(",")]
    except ValueError:
        raise SystemExit(f"error: --mad-betas must be comma-separated numbers, got {args.mad_betas!r}")
    if not mad_betas or not all(0 <= b < math.inf for b in mad_betas):
        raise SystemExit(f"error: --mad-betas must be finite numbers >= 0, got {args.mad_betas!r}")
    if args.output is not None and output_problem(args.output):
        raise SystemExit(f"error: --output: {output_problem(args.output)}")
    if args.capture_video:
        check_video_backend()

    agent, ckpt = load_checkpoint(args.checkpoint, args.env_id)
    # the evaluation's own code, read before anything runs (results may be committed while it runs): a change of
    # float rounding in it moves HalfCheetah's returns by a few %
    commit = code_commit("evaluate.py", "attacks.py", "learned_attack.py", "spo_ppo.py",
                         os.path.basename(str(ckpt.get("script") or f"{ckpt.get('algo', 'spo')}_ppo.py")))
    env_id = ckpt["env_id"]
    eps = args.epsilon if args.epsilon is not None else default_epsilon(env_id)
    ckpt_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    video_dir = args.video_dir or os.path.join("videos", os.path.basename(ckpt_dir))
    # the default name says which attacks ran, so a quick `--attacks random` never replaces a full `--attacks all`
    suffix = "" if args.attacks == "all" else "_" + ("-".join(a for a in ATTACKS if a in names) or "natural")
    out = args.output or os.path.join(ckpt_dir, f"eval_eps{eps:g}{suffix}.json")
    if output_problem(out):
        raise SystemExit(f"error: cannot write the results: {output_problem(out)}")
    if "rs" in names:  # a cached Q model that cannot be read is an error now, not after the other attacks ran
        for _, path in robust_sarsa_paths(args.checkpoint, args):
            if os.path.isfile(path):
                read_robust_sarsa_cache(path, int(np.prod(ckpt["obs_shape"])), int(np.prod(ckpt["action_shape"])))
    print(f"{args.checkpoint}: {ckpt.get('algo', '?')} on {env_id}, {ckpt.get('global_step', '?')} steps; eps = {eps}")

    victim_sha1 = file_sha1(args.checkpoint)
    learned, missing = {}, {}  # sarl / paad: (adversary network, its checkpoint), trained beforehand against this checkpoint
    for name in [n for n in names if n in LEARNED_ATTACKS]:
        found, why = load_learned_adversary(name, args.checkpoint, eps, victim_sha1)
        path = adversary_path(name, args.checkpoint, eps)
        if found is None and args.train_learned and os.path.exists(path):  # --train-learned adds adversaries, never replaces one
            raise SystemExit(f"error: --train-learned does not replace {path}: {why}; move it aside to train a new one")
        if found is None:
            missing[name] = why
        else:
            learned[name] = found
    for name, why in missing.items():
        if args.train_learned:
            print(f"  {name}: {why}; training one now (--train-learned)", flush=True)
            train_learned_adversary(name, args.checkpoint, eps, args.learned_args)
            found, why = load_learned_adversary(name, args.checkpoint, eps, victim_sha1)
        else:
            found = None
        if found is None:
            how = f"train one with `python learned_attack.py {name} {args.checkpoint} --epsilon {eps:g}` or pass --train-learned"
            if args.attacks != "all":
                raise SystemExit(f"error: attack {name} needs a trained adversary: {why}; {how}")
            print(f"note: skipping {name}: {why}; {how}")
            names.remove(name)
        else:
            learned[name] = found
    for name in [n for n in names if n in learned]:
        print(f"  {name}: using {learned[name][1]['path']} ({learned[name][1]['global_step']} training steps)")

    # every attack is a list of variants (MAD's betas, Robust Sarsa's Q models, ...); each variant is evaluated
    # and the attack's result is its strongest variant (lowest mean return)
    variants = {"natural": [("", None)]}
    for name in names:
        if name == "random":  # no steps: uniform noise is one draw
            variants[name] = [("", lambda x: attacks.random(agent, x, eps))]
        elif name == "critic":
            variants[name] = [("", lambda x: attacks.critic(agent, x, eps, steps=args.attack_steps))]
        elif name == "mad":
            variants[name] = [
                (f"beta={beta:g}", lambda x, beta=beta: attacks.mad(agent, x, eps, steps=args.attack_steps, beta=beta, normalize_sigma=True))
                for beta in mad_betas
            ]
        elif name == "rs":  # Robust Sarsa: the Q models are trained (or loaded from the cache) first
            t0 = time.time()
            q_models = robust_sarsa_models(agent, args.checkpoint, ckpt, args, victim_sha1)
            rs_train_seconds = round(time.time() - t0, 2)
            variants[name] = [
                (f"eps_rs={rs_eps:g},reg={rs_reg:g}", lambda x, q=q_net: attacks.q_pgd(agent, x, eps, q, steps=args.attack_steps))
                for (rs_eps, rs_reg), q_net in q_models
            ]
        elif name in ("sarl", "paad"):
            # the adversary's mean action (how the literature evaluates it) and its sampled action (the stochastic
            # policy it was trained as, which can be the stronger attack); the stronger of the two is reported
            net, adv_args = learned[name][0], learned[name][1]["args"]
            if name == "sarl":  # SA-RL: s' = s + eps * hardtanh(adversary action)
                variants[name] = [(label, lambda x, net=net, s=label == "sampled": attacks.bounded_perturbation(
                    x, eps, adversary_action(net, x, s))) for label in ("mean", "sampled")]
            else:  # PA-AD: the director's direction, turned into s' by the actor it was trained with
                variants[name] = [(label, lambda x, net=net, a=adv_args, s=label == "sampled": attacks.paad_actor(
                    agent, x, eps, adversary_action(net, x, s), steps=a["actor_steps"], step_size=a["actor_step_size"]
                )) for label in ("mean", "sampled")]

    results = {}
    for name, options in variants.items():
        t0, best = time.time(), None
        for label, perturb in options:
            video = None
            if args.capture_video:
                video = (args.video_episodes, video_dir, name + (f"-{label}" if label else ""), args.video_size, args.video_frames)
            torch.manual_seed(args.seed)
            returns, lengths = run_episodes(agent, env_id, ckpt["obs_rms"], args.num_episodes, perturb, args.stochastic, args.seed, video)
            if len(options) > 1:
                print(f"  {name} ({label}) {returns.mean():9.1f}", flush=True)
            if best is None or returns.mean() < best[1].mean():
                best = (label, returns, lengths)
        label, returns, lengths = best
        results[name] = {
            "mean": float(returns.mean()), "std": float(returns.std()), "min": float(returns.min()), "max": float(returns.max()),
            "length_mean": float(lengths.mean()), "returns": returns.tolist(), "seconds": round(time.time() - t0, 2),
            "variant": label, "variants_evaluated": len(options),
        }
        if name == "rs":  # "seconds" is the attacked passes only; training (or loading) the Q models comes first
            results[name]["train_seconds"] = rs_train_seconds
        print(f"  {name:8s} {returns.mean():9.1f} ± {returns.std():7.1f}   length {lengths.mean():6.1f}   ({time.time() - t0:.1f} s)", flush=True)

    natural = results["natural"]["mean"]
    attacked = [k for k in results if k != "natural"]  # the worst case is the minimum over the attacks
    worst_name = min(attacked, key=lambda k: results[k]["mean"]) if attacked else None
    worst = results[worst_name]["mean"] if attacked else None
    robustness = (worst - natural) / natural if attacked and natural != 0 else None
    lines = [
        f"| {env_id} ({ckpt.get('algo', '?')}), eps = {eps}, {args.num_episodes} episodes | return (mean ± std) |",
        "|---|---|",
    ]
    for name, r in results.items():
        label = f"{name} ({r['variant']})" if r["variant"] else name
        lines.append(f"| {label} | {r['mean']:.1f} ± {r['std']:.1f} |")
    if attacked:
        lines += [f"| **worst case** ({worst_name}) | **{worst:.1f}** |"]
        lines += [f"| robustness (worst − natural)/natural | {robustness:+.1%} |" if robustness is not None else "| robustness | n/a |"]
    print("\n" + "\n".join(lines))

    report = {
        "checkpoint": os.path.abspath(args.checkpoint), "env_id": env_id, "algo": ckpt.get("algo"),
        "code_commit": commit,
        "global_step": ckpt.get("global_step"), "epsilon": eps, "num_episodes": args.num_episodes,
        "deterministic": not args.stochastic, "mad_betas": mad_betas, "attack_steps": args.attack_steps,
        "results": results, "worst_case": worst, "worst_attack": worst_name, "robustness": robustness,
        "learned_adversaries": {
            name: {"path": adv["path"], "global_step": adv["global_step"], "learning_rate": adv["args"]["learning_rate"],
                   "ent_coef": adv["args"]["ent_coef"], "grid": adv["grid"]}
            for name, (_, adv) in learned.items()
        },
    }
    def save(tmp):
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)

    write_atomically(out, save)
    print(f"wrote {out}")
