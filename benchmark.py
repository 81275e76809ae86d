"""Reproduction at scale: run a sweep of algorithms x envs x seeds, each run trained, exported to results/ and
followed by the full attack evaluation. report.py turns the evaluated runs into docs/results.md (statistics, the
paper's claims, figures); this file trains and evaluates only.

    python benchmark.py run --preset quick --envs Hopper-v5 Walker2d-v5 --seeds 1 2 3
    python benchmark.py run --preset paper --emit slurm          # writes runs/sweep/sweep.slurm, runs nothing
    python benchmark.py status --envs Hopper-v5 Walker2d-v5      # what of that sweep is done, what is left

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
    barpo_k1_authors, barpo_k10_authors: BARPO (kappa 1, 10) with the authors' PPO; group `authors_ppo` = these two,
              sappo_authors and sappo_convex_authors (the calibration's runs taken to seeds 1-3)
    wocar     wocar_ppo.py (WocaR-PPO, the authors' per-env settings)
    radial    radial_ppo.py (RADIAL-PPO)
Presets carry the per-env learning rates of the robust-RL literature (docs/design.md §7): `paper` = 2M steps
(Ant 10M) and Robust Sarsa's grid of 6 Q models in the evaluation, `quick` = 500k steps (Ant 2M) and one
Q model, same learning rates; `calibrated` = `paper` with every algorithm on the robust-RL authors' PPO
(PRESET_FLAGS), the base the HalfCheetah calibration chose: the paper-budget comparison runs with it,
`python benchmark.py run --preset calibrated --algos comparison --envs Hopper-v5 Walker2d-v5 HalfCheetah-v5`.
A baseline also gets its authors' per-env settings (ALGO_ENV_FLAGS).
"""
import json
import os
import shlex
import subprocess
import sys
import time
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
    "calibrated": {"Ant": 10_000_000, "default": 2_000_000},
    "quick": {"Ant": 2_000_000, "default": 500_000},
}
# flags a preset adds to every algorithm, per env family. `calibrated` is `paper` on the robust-RL authors' PPO, the base
# the HalfCheetah calibration against the SA-PPO authors' agent chose (docs/results.md): the critic fitted first with its
# own steps, no gradient clipping, and, as in their configs, a learning rate annealed to 0 except on HalfCheetah, whose
# robust configs keep it constant (WocaR's anneals there too). On HalfCheetah its flags are those of the calibration's
# *_authors runs (tested). Keys: "<algo> <env family>", then "<env family>", then "default".
# A preset with flags trains under <root>/<preset>/: it has the budget of `paper`, and must never resume a run of it.
PRESET_FLAGS = {"calibrated": {"HalfCheetah": ["--no-anneal-lr", "--value-first", "--max-grad-norm", "0"],
                               "wocar HalfCheetah": ["--value-first", "--max-grad-norm", "0"],
                               "default": ["--value-first", "--max-grad-norm", "0"]}}
# names that stand for several algorithms in --algos. The comparison's SA-PPO is the convex (IBP) one: the SA-PPO
# the ATLA authors released and attacked with learned adversaries on every env, and the one that kept the most under
# attack in the HalfCheetah calibration (docs/results.md); results/quick ran the SGLD `sappo` in its place.
ALGO_GROUPS = {"comparison": ["spo", "sappo_convex", "radial", "wocar", "arpo", "arpo_k1", "barpo_k0", "barpo_k1"],
               "kappa": ["barpo_k0", "barpo_k0.25", "barpo_k0.5", "barpo_k1", "barpo_k2"],
               "calibration": ["sappo", "sappo_convex", "sappo_authors", "sappo_convex_authors", "sappo_mixed_authors"],
               "authors_ppo": ["sappo_authors", "sappo_convex_authors", "barpo_k1_authors", "barpo_k10_authors"]}
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
    """algorithms to run (spo, arpo, arpo_k1, barpo_k0, barpo_k1, barpo_k0.25, barpo_k0.5, barpo_k2, sappo, sappo_convex, wocar, radial, and the calibration's sappo_authors, sappo_convex_authors, sappo_mixed_authors, barpo_k1_authors, barpo_k10_authors), or a group: comparison (the paper's table: spo sappo_convex radial wocar arpo arpo_k1 barpo_k0 barpo_k1; results/quick ran sappo, SGLD, in sappo_convex's place), kappa (BARPO at kappa 0, 0.25, 0.5, 1, 2), calibration (SA-PPO: SGLD / convex x CleanRL's / the authors' PPO, and convex with the authors' CROWN-IBP mix), authors_ppo (SA-PPO SGLD and convex, BARPO kappa 1 and 10, each with the authors' PPO at any preset; the calibrated preset gives every algorithm that PPO)"""
    envs: List[str] = field(default_factory=lambda: ["Hopper-v5"])
    """environment ids"""
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds"""
    preset: Literal["quick", "paper", "calibrated", "none"] = "quick"
    """per-env hyperparameters and budgets: quick 500k steps, paper 2M (Ant 10M), calibrated = paper on the robust-RL authors' PPO (--value-first --max-grad-norm 0, and --no-anneal-lr on HalfCheetah but for WocaR; its runs train under <root>/calibrated/); none: the scripts' defaults"""
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
                    preset = PRESET_FLAGS.get(args.preset, {})
                    flags += (ENV_FLAGS[family] + ALGO_ENV_FLAGS.get(algo, {}).get(family, [])
                              + preset.get(f"{algo} {family}", preset.get(family, preset.get("default", [])))
                              + ["--total-timesteps", str(args.total_timesteps or steps)])
                elif args.total_timesteps:
                    flags += ["--total-timesteps", str(args.total_timesteps)]
                run_dir = os.path.join(root, *([args.preset] if args.preset in PRESET_FLAGS else []), env_id, algo, f"s{seed}")
                out_dir = os.path.join(os.path.abspath(args.results), args.preset, env_id, algo, f"s{seed}")
                train = [sys.executable, os.path.join(REPO, script), *flags, *args.extra.split(),
                         "--run-dir", run_dir, "--save-every", str(args.save_every), "--resume"]
                evaluate = [sys.executable, os.path.join(REPO, "evaluate.py"), os.path.join(out_dir, "agent.pt"),
                            "--attacks", args.attacks, "--num-episodes", str(args.eval_episodes),
                            "--output", os.path.join(out_dir, "eval.json")] + (["--rs-grid"] if args.preset in ("paper", "calibrated") else [])
                evaluate += ["--train-learned"] if learned_attacks(args) else []
                jobs.append({"name": f"{env_id}/{algo}/s{seed}", "run_dir": run_dir, "out_dir": out_dir, "script": script,
                             "train": train, "evaluate": evaluate})
    return jobs


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


# TensorBoard scalars of the robust scripts exported per iteration (diagnostics.csv): the radius and whether the policy
# still depends on the state (a collapse to one action has both policy scalars near 0)
DIAGNOSTICS = ["adversary/epsilon", "policy/action_spread", "policy/input_sensitivity"]


def export_run(run_dir, out_dir):
    """The committed form of a finished training run, written into out_dir: agent.pt without the optimiser
    (networks, observation normaliser, args, versions, and the commits of the code that trained it, enough
    for evaluate.py and the learned attacks), curve.csv (step, episodic return of every training episode of
    the run the checkpoint holds: not those of a start that a resume threw away, see kept_episodes) and, for the
    scripts that log them, diagnostics.csv (step and the DIAGNOSTICS scalars of every iteration)."""
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
    diagnostics = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in DIAGNOSTICS if tag in acc.Tags()["scalars"]}
    if diagnostics:  # the robust scripts' collapse scalars, one row per iteration

        def save_diagnostics(tmp):
            steps = sorted(set().union(*diagnostics.values()))
            with open(tmp, "w") as f:
                f.write("step," + ",".join(t.split("/")[1] for t in diagnostics) + "\n")
                f.writelines(f"{step}," + ",".join(f"{d[step]:.6g}" if step in d else "" for d in diagnostics.values()) + "\n"
                             for step in steps)

        write_atomically(os.path.join(out_dir, "diagnostics.csv"), save_diagnostics)
    write_atomically(os.path.join(out_dir, "agent.pt"), lambda tmp: torch.save(ckpt, tmp))  # last: its presence means exported


def run_job(job):
    """Train (resuming if a checkpoint exists), export the finished run to its results directory, evaluate
    it there; logs go next to the training run. Returns (job, status, seconds)."""
    t0 = time.time()
    os.makedirs(job["run_dir"], exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    from evaluate import code_commit

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


# evaluate.py's attacks other than the learned ones (evaluate.ATTACKS without sarl, paad; tests/test_benchmark.py holds
# them equal): what --attacks all asks of every run besides the learned attacks it trains adversaries for
GRADIENT_ATTACKS = ["random", "critic", "mad", "rs"]


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
    asked = GRADIENT_ATTACKS if args.attacks == "all" else args.attacks.split(",")
    wanted = [a for a in asked if a and a not in ("sarl", "paad", "none")]
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["aggregate"]:  # moved to report.py with the rest of the reporting
        raise SystemExit(f"error: aggregate moved to report.py; run: python report.py {shlex.join(sys.argv[1:])}")
    command = tyro.extras.subcommand_cli_from_dict({"run": Run, "status": Status})
    expand_algos(command)
    {Status: status, Run: run}[type(command)](command)
