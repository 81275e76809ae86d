"""Reproduction at scale: run a sweep of algorithms x envs x seeds (each followed by the full attack
evaluation), then aggregate the evaluation JSONs into docs/results.md with plots.

    python benchmark.py run --preset quick --envs Hopper-v5 Walker2d-v5 --seeds 1 2 3
    python benchmark.py run --preset paper --emit slurm          # writes runs/sweep/sweep.slurm, runs nothing
    python benchmark.py status --envs Hopper-v5 Walker2d-v5      # what of that sweep is done, what is left
    python benchmark.py aggregate --root results/quick           # docs/results.md + docs/figures/*.png

Each run is an independent process (`--workers N`, default: number of cores, one torch thread each):
    <script> --env-id E --seed S <preset flags> --run-dir runs/sweep/E/<algo>/s<S> --save-every K --resume
    (export: results/<preset>/E/<algo>/s<S>/ gets agent.pt without optimiser, curve.csv, the code's commits)
    evaluate.py results/<preset>/E/<algo>/s<S>/agent.pt --attacks all [--train-learned] --output .../eval.json
A run whose eval.json is complete (with sarl and paad unless --no-learned) is skipped; an exported run is never
retrained; a killed run restarts from its last periodic checkpoint (losing at most --save-every iterations).
`--emit slurm` writes a SLURM array script whose task i runs job i of the
same sweep (`benchmark.py run ... --only-index i`), so a cluster runs exactly the same thing, resumably.

Algorithms (the paper's four configurations, PPO and the robust baselines):
    spo       spo_ppo.py                      arpo      arpo_ppo.py (kappa 0)
    arpo_k1   arpo_ppo.py --kappa 1           barpo_k0  barpo_ppo.py --kappa 0 ("w/o guidance")
    barpo_k1  barpo_ppo.py --kappa 1 (BARPO)   barpo_k0.25, barpo_k0.5, barpo_k2: the kappa study
    sappo     sappo_ppo.py (SGLD)             sappo_convex  sappo_ppo.py --method convex (IBP)
    sappo_authors, sappo_convex_authors: the same with the authors' PPO (AUTHORS_PPO); group `calibration` = these four and the next
    sappo_mixed_authors: convex with the authors' bounds (CROWN-IBP mixed into IBP early in the ramp) and PPO
    barpo_k1_authors, barpo_k10_authors: BARPO (kappa 1, 10) with the authors' PPO; group `calibrated` = these + sappo_authors
    wocar     wocar_ppo.py (WocaR-PPO, the authors' per-env settings)
    radial    radial_ppo.py (RADIAL-PPO)
Presets carry the per-env learning rates of the robust-RL literature (docs/design.md §7): `paper` = 2M steps
(Ant 10M) and Robust Sarsa's grid of 6 Q models in the evaluation, `quick` = 500k steps (Ant 2M) and one
Q model, same learning rates. A baseline also gets its authors' per-env settings (ALGO_ENV_FLAGS).
"""
import glob
import json
import os
import shlex
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import List, Literal, Optional

import numpy as np
import tyro

REPO = os.path.dirname(os.path.abspath(__file__))

# the PPO of the robust-RL authors' code (Engstrom et al., 2020) as flags of our scripts; docs/design.md §7
AUTHORS_PPO = ["--no-anneal-lr", "--value-first", "--max-grad-norm", "0"]
ALGOS = {
    "spo": ("spo_ppo.py", []),
    "arpo": ("arpo_ppo.py", ["--kappa", "0"]),
    "arpo_k1": ("arpo_ppo.py", ["--kappa", "1"]),
    "barpo_k0": ("barpo_ppo.py", ["--kappa", "0"]),
    "barpo_k1": ("barpo_ppo.py", ["--kappa", "1"]),
    "barpo_k0.25": ("barpo_ppo.py", ["--kappa", "0.25"]),  # the guidance weights of the paper's kappa study (Table 8)
    "barpo_k0.5": ("barpo_ppo.py", ["--kappa", "0.5"]),
    "barpo_k2": ("barpo_ppo.py", ["--kappa", "2"]),
    "sappo": ("sappo_ppo.py", ["--method", "sgld"]),
    "sappo_convex": ("sappo_ppo.py", ["--method", "convex"]),
    # the calibration against the SA-PPO authors' released agent: their PPO around the same regulariser (no annealing of
    # the learning rate, the critic fitted first with its own steps, no gradient clipping), see docs/design.md §7
    "sappo_authors": ("sappo_ppo.py", ["--method", "sgld", *AUTHORS_PPO]),
    "sappo_convex_authors": ("sappo_ppo.py", ["--method", "convex", *AUTHORS_PPO]),
    "sappo_mixed_authors": ("sappo_ppo.py", ["--method", "convex", "--convex-bound", "mixed", *AUTHORS_PPO]),
    # BARPO on that calibrated base; kappa 10 is the CAR authors' weighting (adversarial 1, clean 0.1) in our units
    "barpo_k1_authors": ("barpo_ppo.py", ["--kappa", "1", *AUTHORS_PPO]),
    "barpo_k10_authors": ("barpo_ppo.py", ["--kappa", "10", *AUTHORS_PPO]),
    "wocar": ("wocar_ppo.py", []),
    "radial": ("radial_ppo.py", []),
}
# per-env flags of the robust-RL literature: policy / value learning rates, HalfCheetah's entropy and initial std
ENV_FLAGS = {
    "Hopper": ["--learning-rate", "3e-4", "--value-learning-rate", "2.5e-4"],
    "Walker2d": ["--learning-rate", "4e-4", "--value-learning-rate", "3e-4"],
    "HalfCheetah": ["--learning-rate", "1e-4", "--value-learning-rate", "1e-3", "--ent-coef", "1e-4", "--init-logstd", "-0.6931"],
    "Ant": ["--learning-rate", "5e-5", "--value-learning-rate", "1e-5"],
}
# per-env flags of one algorithm, after ENV_FLAGS: the authors' settings. SA-PPO (radius, regulariser weight per method):
# huanzhang12/SA_PPO at 7f5193e and ATLA_robust_RL at dfdf8f5, src/config_*_{robust_ppo,sappo}_{sgld,convex}.json (Ant SGLD:
# ours, see sappo_ppo.py). WocaR-PPO (umd-huang-lab/WocaR-RL at 2856174, WocaR-PPO/src/config_*_robust_q_ppo*.json):
# radius, SGLD weight, final worst-case weight, its schedule, Q's rate
ALGO_ENV_FLAGS = {
    "sappo": {"Hopper": ["--epsilon", "0.075", "--kappa", "1.0"], "Walker2d": ["--epsilon", "0.05", "--kappa", "0.1"],
              "HalfCheetah": ["--epsilon", "0.15", "--kappa", "0.1"], "Ant": ["--epsilon", "0.15", "--kappa", "0.003"]},
    "sappo_convex": {"Hopper": ["--epsilon", "0.075", "--kappa", "0.1"], "Walker2d": ["--epsilon", "0.05", "--kappa", "0.1"],
                     "HalfCheetah": ["--epsilon", "0.15", "--kappa", "0.1"], "Ant": ["--epsilon", "0.15", "--kappa", "0.003"]},
    "wocar": {
        "Hopper": ["--epsilon", "0.075", "--kappa", "0.1", "--q-weight", "0.8", "--q-weight-schedule", "linear", "--q-lr", "4e-4"],
        "Walker2d": ["--epsilon", "0.05", "--kappa", "0.1", "--q-weight", "0.8", "--q-weight-schedule", "exp", "--q-lr", "4e-4"],
        "HalfCheetah": ["--epsilon", "0.15", "--kappa", "0.1", "--q-weight", "0.5", "--q-weight-schedule", "linear", "--q-lr", "4e-4"],
        "Ant": ["--epsilon", "0.15", "--kappa", "0.003", "--q-weight", "0.8", "--q-weight-schedule", "linear", "--q-lr", "3e-5"],
    },
    "radial": {  # radial_rl_v2 configs (Walker2d at their 0.075; Ant has no config: ε 0.15 and expo are our inference)
        "Hopper": ["--epsilon", "0.075", "--eps-schedule", "smooth"],
        "Walker2d": ["--epsilon", "0.075", "--eps-schedule", "expo"],
        "HalfCheetah": ["--epsilon", "0.15", "--eps-schedule", "expo"],
        "Ant": ["--epsilon", "0.15", "--eps-schedule", "expo"],
    },
}
ALGO_ENV_FLAGS["sappo_authors"], ALGO_ENV_FLAGS["sappo_convex_authors"] = ALGO_ENV_FLAGS["sappo"], ALGO_ENV_FLAGS["sappo_convex"]
ALGO_ENV_FLAGS["sappo_mixed_authors"] = ALGO_ENV_FLAGS["sappo_convex"]
PRESET_STEPS = {
    "paper": {"Ant": 10_000_000, "default": 2_000_000},
    "quick": {"Ant": 2_000_000, "default": 500_000},
}
# Li et al. (ICLR 2026): BAR-PPO's natural / worst case, median of 17 agents, 2M steps, gym -v2 (docs/design.md §9)
PAPER_BARPO = {"Hopper": (3684, 1340), "Walker2d": (4732, 2699), "HalfCheetah": (4837, 3181), "Ant": (5024, 2825)}
# and BARPO without guidance relative to ARPO, in % (natural, worst case)
PAPER_K0_VS_ARPO = {"Hopper": (75, 4), "Walker2d": (104, 173), "HalfCheetah": (156, 209), "Ant": (113, 61)}
# Table 2: the best baseline per task (natural, worst case) and BAR-PPO's worst case over it, in %
PAPER_BEST_BASELINE = {"Hopper": ("wocar", 3629, 1171, 4), "Walker2d": ("sappo", 4875, 997, 154),
                       "HalfCheetah": ("wocar", 4723, 2270, 40), "Ant": ("sappo", 5367, 2355, 20)}
# Table 3: BARPO vs ARPO, both with guidance: worst case, in % (no Walker2d number in the text we worked from)
PAPER_K1_VS_ARPO_K1 = {"Hopper": 19, "HalfCheetah": 193, "Ant": 138}
BASELINES = ["sappo", "sappo_convex", "radial", "wocar"]
# names that stand for several algorithms in --algos
ALGO_GROUPS = {"comparison": ["spo", "sappo", "radial", "wocar", "arpo", "arpo_k1", "barpo_k0", "barpo_k1"],
               "kappa": ["barpo_k0", "barpo_k0.25", "barpo_k0.5", "barpo_k1", "barpo_k2"],
               "calibration": ["sappo", "sappo_convex", "sappo_authors", "sappo_convex_authors", "sappo_mixed_authors"],
               "calibrated": ["sappo_authors", "barpo_k1_authors", "barpo_k10_authors"]}
KAPPA_STUDY = {"barpo_k0": 0.0, "barpo_k0.25": 0.25, "barpo_k0.5": 0.5, "barpo_k1": 1.0, "barpo_k2": 2.0}
# minutes of training per quick-preset run (Hopper-v5, 500k steps) on one core of the 2-core machine with the other
# core busy, measured 2026-12-03 from the sweep's logs (sappo_convex and arpo_k1: assumed as sappo and barpo); the
# machine's speed varies by +-20 % from run to run. What `status` estimates with:
RUN_MINUTES = {"spo": 8, "arpo": 8, "arpo_k1": 9, "barpo": 9, "sappo": 8, "sappo_convex": 8, "radial": 6, "wocar": 12}
EVAL_MINUTES = 2  # the evaluation with the gradient attacks and one Robust Sarsa model (--no-learned)
LEARNED_MINUTES = 11  # instead: both learned adversaries (1M steps each) and the evaluation with all six attacks
# time per environment step relative to Hopper-v5 (spo_ppo.py, 20480 steps each, back to back, measured 2026-12-03)
ENV_TIME_FACTOR = {"Hopper": 1.0, "Walker2d": 1.0, "HalfCheetah": 1.03, "Ant": 1.86}


@dataclass
class Run:
    """Run (or emit) the sweep."""

    algos: List[str] = field(default_factory=lambda: ["spo", "arpo", "barpo_k0", "barpo_k1"])
    """algorithms to run (spo, arpo, arpo_k1, barpo_k0, barpo_k1, sappo, sappo_convex, sappo_authors, sappo_convex_authors, sappo_mixed_authors, wocar,
    radial, barpo_k0.25, barpo_k0.5, barpo_k2), or a group: comparison (the paper's table: spo sappo radial wocar arpo arpo_k1
    barpo_k0 barpo_k1), kappa (BARPO at kappa 0, 0.25, 0.5, 1, 2), calibration (SA-PPO: SGLD / convex x CleanRL's / the authors' PPO, and convex with the authors' CROWN-IBP mix), calibrated (SA-PPO and BARPO kappa 1, 10 with the authors' PPO)"""
    envs: List[str] = field(default_factory=lambda: ["Hopper-v5"])
    """environment ids"""
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds"""
    preset: Literal["quick", "paper", "none"] = "quick"
    """per-env hyperparameters and budgets (none: the scripts' defaults)"""
    total_timesteps: Optional[int] = None
    """override the preset's budget"""
    extra: str = ""
    """extra flags passed to every training script, written with '=': --extra="--inner-steps 5" """
    attacks: str = "all"
    """attacks for evaluate.py after each run"""
    learned: bool = True
    """with --attacks all: train the learned adversaries (SA-RL, PA-AD) of every run first (--no-learned: skip them, for smoke runs)"""
    eval_episodes: int = 50
    """episodes of each evaluation"""
    root: str = "runs/sweep"
    """where the training runs go (TensorBoard logs, full checkpoints for --resume; not committed)"""
    results: str = "results"
    """where each finished run is exported for committing: <results>/<preset>/<env>/<algo>/s<seed>/"""
    workers: int = os.cpu_count() or 1
    """runs in parallel on this machine (one torch thread each)"""
    save_every: int = 10
    """periodic checkpoint interval in iterations (what a killed run can lose)"""
    emit: Optional[Literal["slurm"]] = None
    """write a SLURM array script instead of running"""
    only_index: Optional[int] = None
    """run only job i of the sweep (what each SLURM array task does)"""
    dry_run: bool = False
    """print the commands and what would be skipped, run nothing"""


@dataclass
class Status(Run):
    """Show what of a sweep is done and what is left (same flags as `run`; reads results/ and the training runs)."""


@dataclass
class Aggregate:
    """Aggregate the sweep's evaluation JSONs into a markdown table and plots."""

    root: str = "results/quick"
    """where the runs are: <root>/<env>/<algo>/s<seed>/eval.json (a committed results/<preset>, or a sweep root)"""
    output: str = "docs/results.md"
    """the markdown report; only this root's section (between marker comments) is replaced"""
    title: Optional[str] = None
    """heading of this root's section (default: the root)"""
    figures: str = "docs/figures"
    """where the PNG plots go"""
    bootstrap_reps: int = 2000
    """bootstrap resamples of each confidence interval (rliable's default, 50000, takes minutes here)"""


def env_family(env_id):
    return env_id.split("-")[0]


def expand_algos(args):
    """Replace the group names in args.algos (comparison, kappa) by their algorithms, keeping the order."""
    args.algos = list(dict.fromkeys(a for name in args.algos for a in ALGO_GROUPS.get(name, [name])))
    return args


def check_sweep(args):
    """Every flag of `run` / `status` with a meaningful range, checked before anything runs; duplicate envs and seeds
    are dropped (two copies of one job would train into the same run directory at the same time)."""
    for flag, values in (("--algos", args.algos), ("--envs", args.envs), ("--seeds", args.seeds)):
        if not values:
            raise SystemExit(f"error: {flag} needs at least one value")
    args.envs, args.seeds = list(dict.fromkeys(args.envs)), list(dict.fromkeys(args.seeds))
    for flag, value, low in (("--eval-episodes", args.eval_episodes, 1), ("--workers", args.workers, 1),
                             ("--save-every", args.save_every, 0), ("--total-timesteps", args.total_timesteps, 1)):
        if value is not None and value < low:
            raise SystemExit(f"error: {flag} must be >= {low}, got {value}")
    import gymnasium as gym

    for env_id in args.envs:
        try:
            gym.spec(env_id)
        except gym.error.Error:
            raise SystemExit(f"error: --envs: no environment {env_id!r} is registered in gymnasium")
    if args.attacks != "all":
        from evaluate import ATTACKS

        unknown = [a for a in args.attacks.split(",") if a and a != "none" and a not in ATTACKS]
        if unknown:
            raise SystemExit(f"error: --attacks: unknown attack(s) {unknown}; choose from {ATTACKS} or 'all'")


def jobs_of(args):
    """The sweep as a list of jobs, in a fixed order (the SLURM array index is the position here)."""
    unknown = [a for a in args.algos if a not in ALGOS]
    if unknown:
        raise SystemExit(f"error: unknown algorithm(s) {unknown}; choose from {sorted(ALGOS)} or a group {sorted(ALGO_GROUPS)}")
    check_sweep(args)
    jobs, root = [], os.path.abspath(args.root)  # absolute: the scripts run with the repo as working directory
    for env_id in args.envs:
        family = env_family(env_id)
        if args.preset != "none" and family not in ENV_FLAGS:
            raise SystemExit(f"error: preset {args.preset!r} has no hyperparameters for {env_id}; use --preset none")
        for algo in args.algos:
            for seed in args.seeds:
                script, algo_flags = ALGOS[algo]
                flags = ["--env-id", env_id, "--seed", str(seed)] + algo_flags
                if args.preset != "none":
                    steps = PRESET_STEPS[args.preset].get(family, PRESET_STEPS[args.preset]["default"])
                    flags += ENV_FLAGS[family] + ALGO_ENV_FLAGS.get(algo, {}).get(family, []) + ["--total-timesteps", str(args.total_timesteps or steps)]
                elif args.total_timesteps:
                    flags += ["--total-timesteps", str(args.total_timesteps)]
                run_dir = os.path.join(root, env_id, algo, f"s{seed}")
                out_dir = os.path.join(os.path.abspath(args.results), args.preset, env_id, algo, f"s{seed}")
                train = [sys.executable, os.path.join(REPO, script), *flags, *args.extra.split(),
                         "--run-dir", run_dir, "--save-every", str(args.save_every), "--resume"]
                evaluate = [sys.executable, os.path.join(REPO, "evaluate.py"), os.path.join(out_dir, "agent.pt"),
                            "--attacks", args.attacks, "--num-episodes", str(args.eval_episodes),
                            "--output", os.path.join(out_dir, "eval.json")] + (["--rs-grid"] if args.preset == "paper" else [])
                evaluate += ["--train-learned"] if learned_attacks(args) else []
                jobs.append({"name": f"{env_id}/{algo}/s{seed}", "run_dir": run_dir, "out_dir": out_dir, "script": script,
                             "train": train, "evaluate": evaluate})
    return jobs


def code_commit(*files):
    """The commit the code runs from, with '+dirty' if any of `files` differs from it (None outside a git checkout)."""
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", *files) else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def kept_episodes(episodes, batch):
    """The training episodes of the run that a checkpoint holds, from the (step, return) pairs of its logs in the order
    they were logged. A resume continues from the last checkpoint, written at the end of an iteration, i.e. at a
    multiple of the batch: when the step goes back, a new start began at S, the last multiple of the batch below its
    first episode (whose episodes all lie after S), and whatever an earlier start logged after S belongs to training
    that the resume threw away. The training scripts mark every start in their logs, and TensorBoard then drops those
    episodes itself; this covers logs written without the mark."""
    kept = []
    for step, value in episodes:
        if kept and step < kept[-1][0]:
            restart = (step - 1) // batch * batch
            kept = [e for e in kept if e[0] <= restart]
        kept.append((step, value))
    return kept


def export_run(run_dir, out_dir):
    """The committed form of a finished training run, written into out_dir: agent.pt without the optimiser
    (networks, observation normaliser, args, versions, and the commits of the code that trained it, enough
    for evaluate.py and the learned attacks) and curve.csv (step, episodic return of every training episode of
    the run the checkpoint holds: not those of a start that a resume threw away, see kept_episodes)."""
    import logging

    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evaluate import write_atomically

    ckpt = torch.load(os.path.join(run_dir, "agent.pt"), map_location="cpu", weights_only=True)
    if ckpt["iteration"] < ckpt["args"]["num_iterations"]:
        raise RuntimeError(f"{run_dir}/agent.pt stopped at iteration {ckpt['iteration']} of {ckpt['args']['num_iterations']}")
    for key in [k for k in ckpt if "optimizer" in k]:  # optimiser state (WocaR has two) is for resuming only
        del ckpt[key]
    ckpt.pop("script_path", None)  # a path on the training machine: the committed run is rebuilt from the repository's script
    with open(os.path.join(run_dir, "commits.txt")) as f:
        ckpt["commits"] = list(dict.fromkeys(line.strip() for line in f if line.strip()))  # one per (re)start, in order
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})  # drops what a marked restart superseded
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)  # not a warning here: a restart's superseded events are meant to go
    try:
        acc.Reload()
    finally:
        tb_logger.setLevel(level)
    events = acc.Scalars("charts/episodic_return") if "charts/episodic_return" in acc.Tags()["scalars"] else []
    episodes = kept_episodes([(e.step, e.value) for e in events], ckpt["args"]["num_steps"] * ckpt["args"]["num_envs"])
    os.makedirs(out_dir, exist_ok=True)

    def save_curve(tmp):
        with open(tmp, "w") as f:
            f.write("step,episodic_return\n" + "".join(f"{step},{value:.1f}\n" for step, value in episodes))

    write_atomically(os.path.join(out_dir, "curve.csv"), save_curve)
    write_atomically(os.path.join(out_dir, "agent.pt"), lambda tmp: torch.save(ckpt, tmp))  # last: its presence means exported


def run_job(job):
    """Train (resuming if a checkpoint exists), export the finished run to its results directory, evaluate
    it there; logs go next to the training run. Returns (job, status, seconds)."""
    t0 = time.time()
    os.makedirs(job["run_dir"], exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(os.path.join(job["run_dir"], "commits.txt"), "a") as f:  # the code of every (re)start of the training
        f.write(f"{code_commit(job['script'], 'attacks.py')}\n")
    exported = os.path.exists(os.path.join(job["out_dir"], "agent.pt"))  # then it is trained, maybe on another machine
    for step in ("train", "export", "evaluate") if not exported else ("evaluate",):
        if step == "export":  # never over an export that exists: learned adversaries are bound to its exact bytes
            try:
                export_run(job["run_dir"], job["out_dir"])
            except (OSError, RuntimeError, KeyError) as e:
                return job, f"export failed ({type(e).__name__}: {e})", time.time() - t0
            continue
        with open(os.path.join(job["run_dir"], f"{step}.log"), "a") as log:
            proc = subprocess.run(job[step], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        if proc.returncode != 0:
            return job, f"{step} failed (exit {proc.returncode}, see {job['run_dir']}/{step}.log)", time.time() - t0
    return job, "ok", time.time() - t0


def emit_slurm(args, jobs):
    os.makedirs(args.root, exist_ok=True)
    path = os.path.join(args.root, "sweep.slurm")
    # this command line without --emit, and with --root / --results made absolute (the tasks run in the repo)
    argv, skip, pinned = [], False, ("--emit", "--root", "--results")
    for a in sys.argv[1:]:
        if skip or a.split("=")[0] in pinned:
            skip = not skip and a in pinned  # the flag's value follows as the next argument
            continue
        argv.append(a)
    argv += ["--root", os.path.abspath(args.root), "--results", os.path.abspath(args.results)]
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=barpo-sweep",
        f"#SBATCH --array=0-{len(jobs) - 1}",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=4G",
        "#SBATCH --time=24:00:00",
        f"#SBATCH --output={os.path.abspath(args.root)}/slurm-%A_%a.out",
        "# One array task per run; each is resumable, so resubmitting the array finishes what is missing.",
        f"cd {shlex.quote(REPO)}",
        "# PYTHON: the interpreter of the environment with requirements.txt installed (default: python on PATH)",
        f"${{PYTHON:-python}} benchmark.py {shlex.join(argv)} --only-index $SLURM_ARRAY_TASK_ID",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path} ({len(jobs)} array tasks); submit with: sbatch {path}")


def learned_attacks(args):
    """The learned attacks (sarl, paad) among the sweep's --attacks that it trains adversaries for (none with --no-learned)."""
    names = ["sarl", "paad"] if args.attacks == "all" else [a for a in args.attacks.split(",") if a in ("sarl", "paad")]
    return names if args.learned else []


def read_eval(path):
    """(report, None) for a usable eval.json, (None, why not) otherwise: unreadable, or without a finite mean return
    for the natural run and every attack."""
    try:
        with open(path) as f:
            report = json.load(f)
        means = [float(r["mean"]) for r in report["results"].values()]
        float(report["results"]["natural"]["mean"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"eval.json is unreadable ({type(e).__name__})"
    if not all(np.isfinite(means)):
        return None, "eval.json holds non-finite returns"
    return report, None


def job_problem(job):
    """Why the exported run of a job must be looked at by hand before the sweep touches it (None if nothing is wrong):
    an unreadable agent.pt or eval.json, or an evaluation without its agent. Such a run is skipped by name and never
    counts as done; the sweep does not overwrite what is there."""
    agent, report = os.path.join(job["out_dir"], "agent.pt"), os.path.join(job["out_dir"], "eval.json")
    if os.path.exists(agent) and agent_problem(job["out_dir"]):
        return f"{job['out_dir']}: {agent_problem(job['out_dir'])}"
    if os.path.exists(report):
        if not os.path.exists(agent):
            return f"{job['out_dir']}: eval.json without agent.pt"
        problem = read_eval(report)[1]
        if problem:
            return f"{job['out_dir']}: {problem}"
    return None


def is_complete(job, args):
    """Evaluated with every attack this sweep asks for, the learned ones included if it trains them (and nothing wrong
    with the exported run: see job_problem)."""
    path = os.path.join(job["out_dir"], "eval.json")
    if not os.path.isfile(path) or job_problem(job):
        return False
    wanted = [] if args.attacks == "all" else [a for a in args.attacks.split(",") if a and a not in ("sarl", "paad", "none")]
    return set(wanted + learned_attacks(args)) <= set(read_eval(path)[0]["results"])


def run(args: Run):
    jobs = jobs_of(args)
    if args.emit == "slurm":
        return emit_slurm(args, jobs)
    if args.only_index is not None:
        if not 0 <= args.only_index < len(jobs):
            raise SystemExit(f"error: --only-index {args.only_index} outside 0..{len(jobs) - 1}")
        jobs = [jobs[args.only_index]]
    problems = {j["name"]: job_problem(j) for j in jobs}
    skipped = [j["name"] for j in jobs if problems[j["name"]]]
    todo = [j for j in jobs if not problems[j["name"]] and not is_complete(j, args)]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo) - len(skipped)} already complete, {len(todo)} to do with {args.workers} workers"
          + (f", {len(skipped)} skipped" if skipped else ""), flush=True)
    for name in skipped:
        print(f"skip {name}: {problems[name]}; move the file aside to redo it", flush=True)
    if args.dry_run:
        for j in todo:
            print(" ".join(j["train"]) + "\n  " + " ".join(j["evaluate"]))
        return
    def expected_seconds(job, finished):
        """Mean duration of the finished runs most like this one: same env and algorithm, else same algorithm, else any."""
        env, algo = job["name"].split("/")[:2]
        for alike in (lambda j: j["name"].split("/")[:2] == [env, algo], lambda j: j["name"].split("/")[1] == algo, lambda j: True):
            seconds = [s for j, s in finished if alike(j)]
            if seconds:
                return np.mean(seconds)
        return None  # nothing has finished yet

    start, finished, failed = time.time(), [], []
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        futures = {pool.submit(run_job, j): j for j in todo}
        for done, future in enumerate(as_completed(futures), 1):
            job, status, seconds = future.result()
            if status == "ok":  # a failed run's duration says nothing about the others
                finished.append((job, seconds))
            left = [expected_seconds(j, finished) for f, j in futures.items() if not f.done()]
            eta = f"{sum(left) / max(1, args.workers) / 60:.0f} min" if None not in left else "?"
            print(f"[{done}/{len(todo)}] {job['name']}: {status} in {seconds / 60:.1f} min; "
                  f"elapsed {(time.time() - start) / 60:.1f} min, ETA {eta}", flush=True)
            if status != "ok":
                failed.append(job["name"])
    if failed or skipped:
        raise SystemExit(f"error: {len(failed)} run(s) failed, {len(skipped)} skipped: {', '.join(failed + skipped)}")


def job_state(job, args):
    """(short label, minutes of work left) of one job: done / eval (no learned attacks yet) / trained / NN% / other / bad / -
    (bad: something is wrong that needs a look, job_problem; None minutes)."""
    import torch

    family, algo = env_family(job["name"].split("/")[0]), job["name"].split("/")[1]
    steps = args.total_timesteps or (PRESET_STEPS[args.preset].get(family, PRESET_STEPS[args.preset]["default"])
                                     if args.preset != "none" else 1_000_000)  # the training scripts' default
    factor = ENV_TIME_FACTOR.get(family, 1.0)
    train = RUN_MINUTES.get(algo, RUN_MINUTES.get(algo.split("_k")[0], 20)) * steps / 500_000 * factor
    evaluate = (LEARNED_MINUTES if learned_attacks(args) else EVAL_MINUTES) * factor
    if job_problem(job):
        return "bad", None
    if is_complete(job, args):
        return "done", 0
    if os.path.isfile(os.path.join(job["out_dir"], "eval.json")):
        return "eval", evaluate
    if os.path.isfile(os.path.join(job["out_dir"], "agent.pt")):
        return "trained", evaluate
    path = os.path.join(job["run_dir"], "agent.pt")
    if not os.path.isfile(path):
        return "-", train + evaluate
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        total, done = ckpt["args"].get("total_timesteps"), ckpt["iteration"] / ckpt["args"]["num_iterations"]
    except Exception:  # a truncated or foreign file: training would refuse to resume it
        return "bad", None
    if total != steps:  # the run directory holds another preset's run
        return "other", train + evaluate
    return f"{100 * done:.0f}%", train * (1 - done) + evaluate


def status(args: Status):
    jobs = jobs_of(args)
    states = {j["name"]: job_state(j, args) for j in jobs}
    print(f"{args.preset} preset, {len(jobs)} runs; results in {os.path.join(os.path.abspath(args.results), args.preset)}")
    width = max(len(n.rsplit("/", 1)[0]) for n in states) + 2
    print(" " * width + "".join(f"{'s' + str(s):>9}" for s in args.seeds))
    for env_id in args.envs:
        for algo in args.algos:
            print(f"{env_id + '/' + algo:<{width}}" + "".join(f"{states[f'{env_id}/{algo}/s{s}'][0]:>9}" for s in args.seeds))
    left = [m for label, m in states.values() if label != "done"]
    print(f"done = evaluated with every attack{' incl. the learned ones' if learned_attacks(args) else ''}; "
          "eval = evaluated without the learned attacks; trained = exported, not evaluated; NN% = training under "
          f"{args.root}; other = {args.root} holds a run with another budget (run would refuse to resume it); "
          "bad = a file needs a look (below; run skips it); - = not started")
    for job in jobs:
        if states[job["name"]][0] == "bad":
            print(f"bad {job['name']}: {job_problem(job) or os.path.join(job['run_dir'], 'agent.pt') + ': the training checkpoint is unreadable'}")
    bad = sum(m is None for m in left)
    print(f"{len(jobs) - len(left)} of {len(jobs)} done; left: {len(left)} runs{f' ({bad} bad)' if bad else ''}, about "
          f"{sum(m for m in left if m is not None) / 60:.1f} core-hours{' besides the bad ones' if bad else ''} "
          "(estimate from the minutes measured per quick-preset run, RUN_MINUTES, EVAL_MINUTES and LEARNED_MINUTES in benchmark.py)")


def agent_problem(seed_dir):
    """Why the agent of a results/ run cannot be evaluated again (None if it can)."""
    path = os.path.join(seed_dir, "agent.pt")
    if not os.path.isfile(path):
        return "agent.pt is missing"
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        missing = {"env_id", "agent", "obs_rms"} - set(ckpt)
    except Exception as e:  # a truncated or foreign file: say which and go on with the others
        return f"agent.pt is unreadable ({type(e).__name__})"
    return f"agent.pt lacks {sorted(missing)}" if missing else None


# what an evaluation's numbers depend on besides the agent (evaluate.py writes them into eval.json): runs are pooled only
# if they agree on all of them
PROTOCOL = ("epsilon", "num_episodes", "deterministic", "attack_steps", "mad_betas")


def protocol_of(report):
    return tuple(tuple(report[k]) if isinstance(report.get(k), list) else report.get(k) for k in PROTOCOL)


def describe_protocol(protocol):
    """The protocol in words, e.g. 'ε = 0.075, 50 deterministic episodes per attack, 10 attack steps, MAD β = 1, 1e-05'."""
    eps, episodes, deterministic, steps, betas = protocol
    actions = {True: "deterministic ", False: "sampled-action "}.get(deterministic, "")
    return ", ".join([f"ε = {eps:g}", f"{episodes} {actions}episodes per attack" if episodes is not None else "episodes not recorded"]
                     + ([f"{steps} attack steps"] if steps is not None else [])
                     + ([f"MAD β = {', '.join(f'{b:g}' for b in betas)}"] if betas is not None else []))


def load_results(root):
    """({env_id: {algo: [report, ...]}}, [runs left out, with why], {env_id: protocol}) from
    root/<env>/<algo>/s<seed>/eval.json. A run counts only if its agent can be evaluated again and it was evaluated
    under its task's protocol (ε, episodes, attack settings; PROTOCOL): the one most of the task's runs share (the
    first such run's, on a tie). The others are left out by name: a mean over runs of different protocols means nothing."""
    candidates, left_out = [], []
    for path in sorted(p for p in glob.glob(os.path.join(root, "*", "*", "s*", "eval.json")) if os.path.isfile(p)):
        seed_dir = os.path.dirname(path)
        env_id, algo = path.split(os.sep)[-4:-2]
        report, problem = read_eval(path)
        if report is not None and not isinstance(report.get("epsilon"), (int, float)):
            problem = "eval.json has no epsilon" if "epsilon" not in report else f"eval.json has epsilon {report['epsilon']!r}"
        elif report is not None and not np.isfinite(report["epsilon"]):
            problem = f"eval.json has epsilon {report['epsilon']}"
        problem = problem or agent_problem(seed_dir)
        if problem:
            left_out.append(f"{seed_dir}: {problem}")
            continue
        report["seed_dir"] = seed_dir
        candidates.append((env_id, algo, report))
    protocols = {}
    for env_id in dict.fromkeys(e for e, _, _ in candidates):
        counts = {}
        for e, _, report in candidates:
            if e == env_id:
                counts[protocol_of(report)] = counts.get(protocol_of(report), 0) + 1
        protocols[env_id] = max(counts, key=counts.get)  # the first of the most common
    results = {}
    for env_id, algo, report in candidates:
        if protocol_of(report) != protocols[env_id]:
            left_out.append(f"{report['seed_dir']}: evaluated with {describe_protocol(protocol_of(report))}, not with the "
                            f"{describe_protocol(protocols[env_id])} of the other {env_id} runs")
            continue
        results.setdefault(env_id, {}).setdefault(algo, []).append(report)
    return results, left_out, protocols


def bootstrap(score_dict, func, reps, seed=0):
    """rliable's stratified-bootstrap point estimate and 95 % CI of func over {name: runs (x tasks)}: {name: (point, lo, hi)}."""
    from rliable import library as rly

    with warnings.catch_warnings():  # arch's notice about RandomState; the seeded RandomState keeps the CIs reproducible
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        point, ci = rly.get_interval_estimates(score_dict, func, reps=reps, random_state=np.random.RandomState(seed))
    return {k: (float(point[k][0]), float(ci[k][0][0]), float(ci[k][1][0])) for k in score_dict}


def iqm_ci(values_by_name, reps):
    """Interquartile mean over seeds and its 95 % stratified-bootstrap CI, per name: {name: (iqm, lo, hi)}."""
    from rliable import metrics

    scores = {k: np.asarray(v, dtype=float).reshape(-1, 1) for k, v in values_by_name.items() if len(v)}
    return bootstrap(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps) if scores else {}


def probability_of_improvement(x, others, reps):
    """P(a run of x scores higher than a run of y) and its 95 % CI for each y in others (rliable; Mann-Whitney)."""
    from rliable import metrics

    pairs = {k: (np.reshape(x, (-1, 1)).astype(float), np.reshape(y, (-1, 1)).astype(float)) for k, y in others.items() if len(y)}
    return bootstrap(pairs, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps) if pairs and len(x) else {}


def learning_curves(run_dirs, grid_points=50):
    """Episodic returns of each run (its curve.csv) interpolated onto a common step grid: (steps, array runs x grid)."""
    curves = []
    for d in run_dirs:
        path = os.path.join(d, "curve.csv")
        if not os.path.isfile(path):
            continue
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        if len(table) == 0:
            continue
        steps, values = table[:, 0], table[:, 1]
        window = max(1, len(values) // 100)  # light smoothing: running mean over 1 % of the episodes
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        curves.append((steps[window - 1 :], smooth))
    if not curves:
        return None, None
    end = min(s[-1] for s, _ in curves)
    grid = np.linspace(0, end, grid_points)
    return grid, np.array([np.interp(grid, s, v) for s, v in curves])


def write_section(path, key, text, new_file_head=""):
    """Put `text` between the markers <!-- begin key --> / <!-- end key --> of the markdown file `path`,
    replacing what was there and keeping everything else (appended if the markers are missing)."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    section = begin + "\n" + text.rstrip("\n") + "\n" + end
    old = open(path).read() if os.path.exists(path) else new_file_head
    i = old.find(begin)
    j = old.find(end, i) if i >= 0 else -1
    if old.count(begin) > 1 or old.count(end) > 1 or (i >= 0) != (j >= 0):
        raise SystemExit(f"error: {path} must contain the markers {begin} ... {end} once each, in this order; fix it by hand")
    new = old[:i] + section + old[j + len(end) :] if i >= 0 else old.rstrip("\n") + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    from evaluate import write_atomically

    def save(tmp):
        with open(tmp, "w") as f:
            f.write(new)

    write_atomically(path, save)


MIN_SEEDS_FOR_VERDICT = 3


def verdict(estimate, n=(MIN_SEEDS_FOR_VERDICT,) * 2):
    """A claim 'x beats y' decided by P(a run of x scores higher than a run of y) and its 95 % CI, given n = (runs of
    x, runs of y); fewer than MIN_SEEDS_FOR_VERDICT on either side decide nothing."""
    if estimate is None:
        return "not run"
    if min(n) < MIN_SEEDS_FOR_VERDICT:
        return f"cannot tell (seeds {n[0]} vs {n[1]})"
    return "holds" if estimate[1] > 0.5 else "does not hold" if estimate[2] < 0.5 else "cannot tell"


def attacked(runs):
    """The runs that faced at least one attack (a natural-only evaluation has no worst case)."""
    return [r for r in runs if set(r["results"]) - {"natural"}]


def common_attacks(by_algo, algos):
    """The attacks evaluated on every attacked run of these algorithms. Worst cases are compared only over the
    same attacks, so that a run that faced the learned adversaries is not compared with one that did not."""
    sets = [set(r["results"]) - {"natural"} for a in algos for r in attacked(by_algo.get(a, []))]
    return set.intersection(*sets) if sets else set()


def worst_over(runs, attacks):
    """Each attacked run's lowest mean return over `attacks` (which every one of them faced)."""
    return [min(r["results"][a]["mean"] for a in attacks) for r in attacked(runs)] if attacks else []


def attack_names(attacks):
    from evaluate import ATTACKS

    return "all six" if set(ATTACKS) <= set(attacks) else ", ".join(a for a in ATTACKS if a in attacks) or "none in common"


def percent_change(new, base):
    """new relative to base in % of base. A ratio to a base at or below zero means nothing (HalfCheetah returns
    can be negative: an agent that stands still scores about -5), and one to a base near zero only magnifies
    noise (a worst case of 3 against 975 reads +29509 %), so there the absolute difference is given: when
    base ≤ 0, or when the change exceeds ten times the base (more than +1000 %)."""
    if base <= 0:
        return f"{round(new - base):+d} in return (base {base:.0f} ≤ 0)"
    if abs(new - base) > 10 * base:
        return f"{round(new - base):+d} in return (base {base:.0f}, near 0)"
    return f"{100 * (new - base) / base:+.0f}%"


def paper_claims(results, reps):
    """The paper's comparative claims, one line each per task, decided by the probability of improvement."""
    from rliable import metrics

    def relative(x, y):
        if not (x and y):
            return "–"
        a, b = metrics.aggregate_iqm(np.asarray(x, float)), metrics.aggregate_iqm(np.asarray(y, float))
        return percent_change(a, b)

    def p_cell(estimate):
        return f"{estimate[0]:.2f} [{estimate[1]:.2f}, {estimate[2]:.2f}]" if estimate else "–"

    def compare(by_algo, x, y, key):
        """(scores of x, scores of y, attacks compared over, P(x better) or None) for natural or worst-case return."""
        if key == "natural":
            attacks = None
            xs, ys = ([r["results"]["natural"]["mean"] for r in by_algo.get(a, [])] for a in (x, y))
        else:
            attacks = common_attacks(by_algo, [x, y])
            xs, ys = worst_over(by_algo.get(x, []), attacks), worst_over(by_algo.get(y, []), attacks)
        poi = probability_of_improvement(xs, {y: ys}, reps).get(y) if xs and ys else None
        return xs, ys, attacks, poi

    def judged(by_algo, x, y, poi, xs, ys):
        if by_algo.get(x) and by_algo.get(y) and not (xs and ys):
            return "no attack in common"
        return verdict(poi, (len(xs), len(ys)))

    rows = []
    for env_id, by_algo in results.items():
        family = env_family(env_id)
        present = [b for b in BASELINES if by_algo.get(b)]
        if family in PAPER_BEST_BASELINE:
            paper_algo, _, _, paper_gain = PAPER_BEST_BASELINE[family]
            pairs = {b: compare(by_algo, "barpo_k1", b, "worst") for b in present}  # each pair over its own common attacks
            scored = {b: pair for b, pair in pairs.items() if pair[0] and pair[1]}
            if by_algo.get("barpo_k1") and scored:
                best = max(scored, key=lambda b: metrics.aggregate_iqm(np.asarray(scored[b][1], float)))
                verdicts = {b: judged(by_algo, "barpo_k1", b, pair[3], pair[0], pair[1]) for b, pair in pairs.items()}
                overall = ("does not hold" if "does not hold" in verdicts.values() else "holds" if set(verdicts.values()) == {"holds"}
                           else next(v for v in verdicts.values() if v != "holds"))
                # the row shows the pair that decides the verdict: our best baseline if it holds against all,
                # otherwise the first baseline it fails against
                decider = best if overall == "holds" or verdicts.get(best) == overall else next(
                    (b for b, v in verdicts.items() if v == overall and b in scored), best)
                xs, ys, attacks, poi = scored[decider]
                against = f"over {best} (our best)" if decider == best else f"over {decider} (decides; our best: {best})"
                rows.append(f"| BARPO has the best worst case of all baselines ({', '.join(present)}) | {env_id} | "
                            f"{paper_gain:+d}% over {paper_algo} | {relative(xs, ys)} {against} | "
                            f"{attack_names(attacks)} | {p_cell(poi)} | {overall} |")
            else:
                rows.append(f"| BARPO has the best worst case of all baselines | {env_id} | {paper_gain:+d}% over {paper_algo} "
                            f"| – | – | – | {'no attack in common' if by_algo.get('barpo_k1') and present else 'not run'} |")
        comparisons = [("BARPO w/o guidance beats ARPO, natural", "barpo_k0", "arpo", "natural", PAPER_K0_VS_ARPO.get(family, (None,))[0]),
                       ("BARPO w/o guidance beats ARPO, worst case", "barpo_k0", "arpo", "worst", PAPER_K0_VS_ARPO.get(family, (None, None))[1]),
                       ("BARPO beats ARPO, both guided (κ = 1), worst case", "barpo_k1", "arpo_k1", "worst", PAPER_K1_VS_ARPO_K1.get(family))]
        for claim, x, y, key, paper in comparisons:
            xs, ys, attacks, poi = compare(by_algo, x, y, key)
            rows.append(f"| {claim} | {env_id} | {f'{paper:+d}%' if paper is not None else 'no number'} | {relative(xs, ys)} "
                        f"| {attack_names(attacks) if key == 'worst' and by_algo.get(x) and by_algo.get(y) else '–'} | {p_cell(poi)} "
                        f"| {judged(by_algo, x, y, poi, xs, ys)} |")
    return ["### The paper's claims at our budget", "",
            "Each claim 'x beats y' is decided by the probability that a run of x scores higher than a run of y, with its "
            "95 % stratified-bootstrap CI (rliable): **holds** if the interval lies above 0.5, **does not hold** if below, "
            f"**cannot tell** if it contains 0.5 or either side has fewer than {MIN_SEEDS_FOR_VERDICT} seeds. With 3 seeds per "
            "side the interval excludes 0.5 only if at most about one of the nine seed pairs is reversed, and a verdict near "
            "that boundary can change with the number of bootstrap resamples: read 'holds' as 'the seeds of x beat those "
            "of y at this budget', not as a population statement. "
            "'ours' is the relative difference of the IQMs. The paper's numbers are for 2M steps on gym -v2 "
            "(median of 17 agents); ours for this root's budget on -v5.", "",
            "A worst case is compared only over the attacks evaluated on every run of both sides of a pair (column "
            "'worst case over'; for the baselines row, the pair that decides: our best baseline, or the first one the claim "
            "fails against): a run attacked by the learned adversaries is not compared with one that was not. The "
            "baselines claim holds only if it holds against each.", "",
            "| claim | task | paper | ours (IQM) | worst case over | P(x better) [95 % CI] | verdict |",
            "|---|---|---|---|---|---|---|"] + rows + [""]


def kappa_study(results, args, name):
    """Natural and worst-case return against the guidance weight κ of BARPO, where at least three κ were run."""
    import matplotlib.pyplot as plt

    lines = []
    for env_id, by_algo in results.items():
        kappas = {k: a for a, k in KAPPA_STUDY.items() if by_algo.get(a)}
        if len(kappas) < 3:
            continue
        natural = {a: [r["results"]["natural"]["mean"] for r in by_algo[a]] for a in kappas.values()}
        attacks = common_attacks(by_algo, list(kappas.values()))  # the same attacks for every κ
        worst = {a: worst_over(by_algo[a], attacks) for a in kappas.values()}
        nat_ci, worst_ci = iqm_ci(natural, args.bootstrap_reps), iqm_ci(worst, args.bootstrap_reps)
        lines += [f"### {env_id}: BARPO's guidance weight κ", "", f"Worst case over: {attack_names(attacks)}.", "",
                  "| κ | seeds | natural | worst case |", "|---|---|---|---|"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, ci, offset in (("natural", nat_ci, -0.01), ("worst case", worst_ci, 0.01)):
            ks = [k for k in sorted(kappas) if kappas[k] in ci]
            if not ks:  # e.g. no attack evaluated: no worst case to draw
                continue
            points = np.array([ci[kappas[k]] for k in ks])
            ax.errorbar(np.array(ks) + offset, points[:, 0], yerr=[points[:, 0] - points[:, 1], points[:, 2] - points[:, 0]],
                        marker="o", capsize=3, label=label)
        for k in sorted(kappas):
            a = kappas[k]
            lines.append(f"| {k:g} | {len(natural[a])} | " + " | ".join(
                f"{ci[a][0]:.0f} [{ci[a][1]:.0f}, {ci[a][2]:.0f}]" if a in ci else "–" for ci in (nat_ci, worst_ci)) + " |")
        ax.set(title=f"{env_id}: BARPO against κ (IQM, 95 % CI)", xlabel="guidance weight κ", ylabel="return")
        ax.legend()
        fig.tight_layout()
        png = os.path.join(args.figures, f"results_{name}_{env_id}_kappa.png")
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += ["", f"![{env_id} kappa]({os.path.relpath(png, os.path.dirname(args.output) or '.')})", ""]
    return lines


def aggregate(args: Aggregate):
    results, left_out, protocols = load_results(args.root)
    for line in left_out:
        print(f"left out {line}", file=sys.stderr)
    if not results:
        raise SystemExit(f"error: no evaluated run under {args.root}/<env>/<algo>/s<seed>/ (eval.json and agent.pt)")
    if args.bootstrap_reps < 100:
        raise SystemExit(f"error: --bootstrap-reps must be >= 100, got {args.bootstrap_reps}")
    import matplotlib

    from evaluate import ATTACKS, LEARNED_ATTACKS

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly, metrics, plot_utils

    os.makedirs(args.figures, exist_ok=True)
    name = os.path.basename(os.path.normpath(args.root))
    n_runs = sum(len(r) for e in results.values() for r in e.values())
    lines = [f"## {args.title or args.root}", "",
             f"Aggregated by `python benchmark.py aggregate --root {args.root}` from {n_runs} evaluated runs"
             + (f" ({len(left_out)} left out: " + "; ".join(left_out) + ")" if left_out else "") + ". "
             "Each run's score is its mean return over the episodes of its task's protocol (under each task's heading; "
             "every run of a task was evaluated under the same one). Cells: interquartile mean (IQM) over "
             f"seeds [95 % stratified-bootstrap confidence interval, {args.bootstrap_reps} resamples] (rliable; with fewer "
             "than 4 seeds the IQM is the plain mean); attack columns: IQM alone. Worst case = minimum over the attacks "
             "every run of that algorithm faced (column 'over'); robustness = (worst − natural) / natural, over the runs with a natural return above 0.", ""]
    profiles_fig, profile_axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for panel, (env_id, by_algo) in enumerate(results.items()):
        seen = {a for reps in by_algo.values() for r in reps for a in r["results"] if a != "natural"}
        attacks = [a for a in ATTACKS if a in seen] + sorted(seen - set(ATTACKS))  # evaluate.py's order
        by_algo = dict(sorted(by_algo.items(), key=lambda kv: list(ALGOS).index(kv[0]) if kv[0] in ALGOS else len(ALGOS)))
        steps = sorted({r["global_step"] for reps in by_algo.values() for r in reps if r.get("global_step")})
        natural = {a: [r["results"]["natural"]["mean"] for r in reps] for a, reps in by_algo.items()}
        # each algorithm's worst case over the attacks all its runs faced, so that a row never mixes seeds attacked by
        # the learned adversaries with seeds that were not (the per-seed table keeps each run's own worst case)
        own = {a: common_attacks(by_algo, [a]) for a in by_algo}
        worst = {a: worst_over(reps, own[a]) for a, reps in by_algo.items()}
        nat_ci, worst_ci = iqm_ci(natural, args.bootstrap_reps), iqm_ci(worst, args.bootstrap_reps)

        def cell(estimate, fmt="{:.0f}"):
            return f"{fmt.format(estimate[0])} [{fmt.format(estimate[1])}, {fmt.format(estimate[2])}]" if estimate else "–"

        def iqm(values, fmt="{:.0f}"):
            return fmt.format(metrics.aggregate_iqm(np.asarray(values, dtype=float))) if values else "–"

        lines += [f"### {env_id} (ε = {protocols[env_id][0]:g})", "",
                  f"Protocol (from the runs' eval.json): {describe_protocol(protocols[env_id])}.", "",
                  "| algorithm | seeds | natural | " + " | ".join(attacks) + " | worst case | over | robustness |",
                  "|---|---|---|" + "---|" * len(attacks) + "---|---|---|"]
        for algo, reps in by_algo.items():
            row = [algo, str(len(reps)), cell(nat_ci.get(algo))]
            row += [iqm([r["results"][a]["mean"] for r in reps if a in r["results"]]) for a in attacks]
            robustness = [100 * (w - r["results"]["natural"]["mean"]) / r["results"]["natural"]["mean"]
                          for r, w in zip(attacked(reps), worst[algo]) if r["results"]["natural"]["mean"] > 0]
            row += [cell(worst_ci.get(algo)), attack_names(own[algo]) if worst[algo] else "–", iqm(robustness, "{:+.0f}%")]
            lines.append("| " + " | ".join(row) + " |")
        if "barpo_k1" in worst and worst["barpo_k1"] and len(by_algo) > 1:
            lines += ["", "Probability that a BARPO (κ = 1) run has a higher worst-case return than a run of each other "
                      "algorithm (rliable; 0.5 = no difference; an interval that excludes 0.5 decides), each pair over "
                      "the attacks evaluated on every run of both:", "",
                      "| BARPO vs | P(BARPO better) [95 % CI] | worst case over |", "|---|---|---|"]
            for a, reps in by_algo.items():
                if a == "barpo_k1" or not attacked(reps):
                    continue
                common = common_attacks(by_algo, ["barpo_k1", a])
                ours, theirs = worst_over(by_algo["barpo_k1"], common), worst_over(reps, common)
                poi = probability_of_improvement(ours, {a: theirs}, args.bootstrap_reps) if ours and theirs else {}
                lines.append(f"| {a} | {cell(poi.get(a), '{:.2f}')} | {attack_names(common)} |")
        learned = [a for a in attacks if a in LEARNED_ATTACKS]
        if learned:  # what the learned attacks add: the worst case without them, and with them
            def run_worst(r, names):
                values = [r["results"][a]["mean"] for a in names if a in r["results"]]
                return min(values) if values else None

            gradient = [a for a in attacks if a not in LEARNED_ATTACKS]
            lines += ["", f"How far the worst case falls when the learned attacks ({', '.join(learned)}) join the "
                      f"others ({', '.join(gradient)}), over the runs evaluated with both (IQM over seeds):", "",
                      "| algorithm | runs | worst case without | with | change |", "|---|---|---|---|---|"]
            for algo, reps in by_algo.items():
                both = [r for r in reps if all(a in r["results"] for a in learned) and run_worst(r, gradient) is not None]
                if both:
                    without = metrics.aggregate_iqm(np.array([run_worst(r, gradient) for r in both], dtype=float))
                    with_ = metrics.aggregate_iqm(np.array([run_worst(r, attacks) for r in both], dtype=float))
                    lines.append(f"| {algo} | {len(both)} | {without:.0f} | {with_:.0f} | {percent_change(with_, without)} |")
        lines += ["", "<details><summary>per seed</summary>", "",
                  "| algorithm | seed | natural | " + " | ".join(attacks) + " | worst case |",
                  "|---|---|---|" + "---|" * len(attacks) + "---|"]
        for algo, reps in by_algo.items():
            for r in reps:
                row = [algo, os.path.basename(r["seed_dir"]), f"{r['results']['natural']['mean']:.0f}"]
                row += [f"{r['results'][a]['mean']:.0f}" if a in r["results"] else "–" for a in attacks]
                lines.append("| " + " | ".join(row + [f"{r['worst_case']:.0f}" if r.get("worst_case") is not None else "–"]) + " |")
        lines += ["", "</details>"]
        ref = PAPER_BARPO.get(env_family(env_id))
        if ref:  # the paper's numbers beside ours (docs/design.md §9)
            def change(algo, estimates):
                ours, base = estimates.get(algo), estimates.get("arpo")
                return percent_change(ours[0], base[0]) if ours and base else "–"

            ours_k1 = [e.get("barpo_k1") for e in (nat_ci, worst_ci)]
            paper_k0 = PAPER_K0_VS_ARPO[env_family(env_id)]
            lines += ["", "| compared with the paper (gym -v2, 2M steps, median of 17 agents) | ours (IQM) | paper |",
                      "|---|---|---|",
                      "| BARPO (κ = 1): natural / worst case | "
                      + (" / ".join(f"{e[0]:.0f}" for e in ours_k1) if None not in ours_k1 else "–") + f" | {ref[0]} / {ref[1]} |",
                      f"| BARPO w/o guidance (κ = 0) vs ARPO: natural | {change('barpo_k0', nat_ci)} | {paper_k0[0]:+d}% |",
                      f"| BARPO w/o guidance (κ = 0) vs ARPO: worst case | {change('barpo_k0', worst_ci)} | {paper_k0[1]:+d}% |",
                      "", "v5 returns are comparable in shape, not digit for digit. Our training budget: "
                      + (", ".join(f"{step:,}" for step in steps) + " steps per run." if steps else "not recorded.")]
        # plots: learning curves (median, IQR band) and natural vs worst case per seed
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for algo, reps in by_algo.items():
            grid, curves = learning_curves([r["seed_dir"] for r in reps])
            if grid is not None:
                med, q1, q3 = np.percentile(curves, [50, 25, 75], axis=0)
                ax1.plot(grid, med, label=f"{algo} ({len(curves)} seeds)")
                ax1.fill_between(grid, q1, q3, alpha=0.2)
            naturals = [r["results"]["natural"]["mean"] for r in attacked(reps)] if worst[algo] else []  # worst[algo]'s runs
            ax2.scatter(naturals, worst[algo], label=algo, s=40)
        if ref:
            ax2.scatter([ref[0]], [ref[1]], marker="*", s=200, c="k", label="paper BAR-PPO (v2)")
        ax1.set(title=f"{env_id}: training return (median, IQR band)", xlabel="environment steps", ylabel="episodic return")
        ax2.set(title=f"{env_id}: natural vs worst-case return (one point per seed)", xlabel="natural return", ylabel="worst-case return")
        lo = min(ax2.get_xlim()[0], ax2.get_ylim()[0])
        hi = max(ax2.get_xlim()[1], ax2.get_ylim()[1])
        ax2.plot([lo, hi], [lo, hi], "k:", lw=0.8, label="worst = natural")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        png = os.path.join(args.figures, f"results_{name}_{env_id}.png")
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += ["", f"![{env_id}]({os.path.relpath(png, os.path.dirname(args.output) or '.')})", ""]
        # performance profile of the worst-case returns: the fraction of runs scoring above tau, for every tau
        scores = {a: np.asarray(v, dtype=float).reshape(-1, 1) for a, v in worst.items() if v}
        if scores:
            taus = np.linspace(0, 1.05 * max(float(v.max()) for v in scores.values()), 101)
            with warnings.catch_warnings():  # as in bootstrap()
                warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
                profiles, profile_cis = rly.create_performance_profile(scores, taus, reps=args.bootstrap_reps)
            plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis, ax=profile_axes[0][panel],
                                                 xlabel="worst-case return τ", ylabel="fraction of runs > τ")
            profile_axes[0][panel].set_title(env_id)
            profile_axes[0][panel].legend(fontsize=8)
    lines += kappa_study(results, args, name) + paper_claims(results, args.bootstrap_reps)
    profiles_fig.tight_layout()
    png = os.path.join(args.figures, f"results_{name}_worst_case_profiles.png")
    profiles_fig.savefig(png, dpi=110)
    plt.close(profiles_fig)
    lines += [f"Performance profiles of the worst-case return (fraction of runs above each return τ, 95 % CI bands): "
              f"![worst-case profiles]({os.path.relpath(png, os.path.dirname(args.output) or '.')})", ""]
    write_section(args.output, args.root, "\n".join(lines), new_file_head="# Results\n")
    print("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    command = tyro.extras.subcommand_cli_from_dict({"run": Run, "status": Status, "aggregate": Aggregate})
    if isinstance(command, Run):  # and Status
        expand_algos(command)
    {Status: status, Run: run, Aggregate: aggregate}[type(command)](command)
