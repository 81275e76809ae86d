"""Robustness against the attack budget: each algorithm's median agent under the attacks at multiples of ε.

    python eps_curve.py --root results/quick --envs Hopper-v5 Walker2d-v5 --workers 2
    python eps_curve.py --root results/quick --envs Hopper-v5 --plot-only      # redraw from the committed JSONs

For every algorithm with evaluated runs under <root>/<env>/<algo>/s<seed>/, its median agent is the seed whose
worst-case return (eval.json, minimum over all attacks evaluated there) is the median of its seeds (the lower
of the two middle ones for an even count). That agent is evaluated by evaluate.py with the gradient attacks
(random, critic, MAD, Robust Sarsa) at ε × {0.5, 1.5, 2} of the task's evaluation ε (1× is its eval.json and
0× its natural return), and with PA-AD at 2× (an adversary trained at that radius, --train-learned; 1× is in
eval.json). Each evaluation is written next to the agent (eval_eps<ε>_gradient.json, eval_eps<ε>_paad.json)
and reused, so an interrupted run resumes and the figure can be redrawn from committed files.

Every point uses the protocol of the agent's eval.json (its number of episodes, Robust Sarsa's grid if it
used one). Output, per task: a markdown table with the return under the strongest gradient attack per multiple
and the ranking of the algorithms at each multiple (printed, and written to --output in the task's own
section between marker comments, so tasks can be drawn one at a time), and <figures>/eps_curve_<env>.png. Cost, estimated from the sweep's
logs (2026-12-03, Hopper-v5, one core, other core busy; eps_curve.py itself not yet timed on the sweep): a
sweep run's evaluation with the four gradient attacks took 1-1.5 min including Robust Sarsa's Q model (here
cached), a PA-AD adversary 5-8 min, so roughly 10-12 min per agent.
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import tyro

from benchmark import ALGOS, write_section

REPO = os.path.dirname(os.path.abspath(__file__))
GRADIENT = ["random", "critic", "mad", "rs"]


@dataclass
class Args:
    root: str = "results/quick"
    """where the evaluated runs are: <root>/<env>/<algo>/s<seed>/{agent.pt,eval.json}"""
    envs: List[str] = field(default_factory=lambda: ["Hopper-v5"])
    """tasks to draw"""
    algos: List[str] = field(default_factory=list)
    """algorithms (default: every one evaluated under <root>/<env>/)"""
    multiples: List[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0])
    """multiples of the evaluation ε for the gradient attacks (0 = natural, 1 = eval.json)"""
    paad_multiples: List[float] = field(default_factory=lambda: [1.0, 2.0])
    """multiples of ε for PA-AD (each new one trains an adversary, ~5-8 min of one core)"""
    num_episodes: Optional[int] = None
    """episodes per evaluation (default: as many as the agent's eval.json, so that every point has its protocol)"""
    evaluate_args: str = ""
    """extra flags for every evaluate.py call, written with '=': --evaluate-args="--rs-grid" """
    workers: int = 1
    """evaluations in parallel (one core each)"""
    plot_only: bool = False
    """evaluate nothing; draw from the JSONs that exist"""
    output: str = "docs/results.md"
    """markdown report; this figure's section (between marker comments) is replaced"""
    figures: str = "docs/figures"
    """where eps_curve_<env>.png goes"""


def median_agent(seed_dirs):
    """The seed directory whose eval.json worst case is the median of the seeds' (lower middle for an even count)."""
    scored = []
    for d in seed_dirs:
        with open(os.path.join(d, "eval.json")) as f:
            report = json.load(f)
        if report.get("worst_case") is not None:
            scored.append((report["worst_case"], d, report))
    if not scored:
        return None, None
    scored.sort(key=lambda t: t[0])
    _, d, report = scored[(len(scored) - 1) // 2]
    return d, report


def eval_path(seed_dir, eps, kind):
    return os.path.join(seed_dir, f"eval_eps{eps:g}_{kind}.json")


def protocol_flags(report, num_episodes):
    """evaluate.py flags that repeat the protocol of the agent's eval.json (the 1x point) at the other radii:
    its number of episodes, and Robust Sarsa's grid of Q models if it used one."""
    flags = ["--num-episodes", str(num_episodes or report.get("num_episodes", 50))]
    return flags + (["--rs-grid"] if report["results"].get("rs", {}).get("variants_evaluated", 1) > 1 else [])


def evaluate(job, flags):
    """Run evaluate.py for one (agent, ε, kind) with the agent's protocol flags; returns (job, error or None, seconds)."""
    seed_dir, eps, kind = job
    t0 = time.time()
    cmd = [sys.executable, os.path.join(REPO, "evaluate.py"), os.path.join(seed_dir, "agent.pt"), "--epsilon", f"{eps:g}",
           "--attacks", ",".join(GRADIENT) if kind == "gradient" else "paad", "--output", eval_path(seed_dir, eps, kind)]
    cmd += flags + (["--train-learned"] if kind == "paad" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    error = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
    return job, error, time.time() - t0


def curve(seed_dir, report, multiples, paad_multiples):
    """{multiple: {attack: mean return}} from the JSONs that exist (1x from eval.json, 0x its natural return)."""
    eps = report["epsilon"]
    points = {0.0: {"natural": report["results"]["natural"]["mean"]}}
    for m in sorted(set(multiples) | set(paad_multiples)):
        if m == 0:
            continue
        results = dict(report["results"]) if m == 1 else {}
        for kind in ("gradient", "paad"):
            path = eval_path(seed_dir, m * eps, kind)
            if m != 1 and os.path.isfile(path):
                with open(path) as f:
                    results.update(json.load(f)["results"])
        results.pop("natural", None)
        if results:
            points[m] = {a: r["mean"] for a, r in results.items()}
    return points


def main(args):
    if (args.num_episodes is not None and args.num_episodes < 1) or args.workers < 1 or min(args.multiples + args.paad_multiples, default=0) < 0:
        raise SystemExit("error: --num-episodes and --workers must be positive and the multiples >= 0")
    args.paad_multiples = [m for m in args.paad_multiples if m > 0]  # PA-AD at radius 0 is the natural return
    agents = {}  # (env, algo) -> (seed_dir, report)
    for env_id in args.envs:
        env_dir = os.path.join(args.root, env_id)
        if not os.path.isdir(env_dir):
            raise SystemExit(f"error: no runs for {env_id} under {args.root}")
        algos = args.algos or sorted(os.listdir(env_dir), key=lambda a: list(ALGOS).index(a) if a in ALGOS else len(ALGOS))
        for algo in algos:
            seeds = sorted(os.path.join(env_dir, algo, s) for s in os.listdir(os.path.join(env_dir, algo))
                           if os.path.isfile(os.path.join(env_dir, algo, s, "eval.json"))) if os.path.isdir(os.path.join(env_dir, algo)) else []
            seed_dir, report = median_agent(seeds)
            if seed_dir is None:
                print(f"note: {env_id}/{algo} has no evaluated run; left out", file=sys.stderr)
                continue
            agents[env_id, algo] = (seed_dir, report)
    jobs, flags = [], {}
    for seed_dir, report in agents.values():
        eps = report["epsilon"]
        jobs += [(seed_dir, m * eps, "gradient") for m in args.multiples if m not in (0, 1)]
        jobs += [(seed_dir, m * eps, "paad") for m in args.paad_multiples if m != 1]
        flags[seed_dir] = protocol_flags(report, args.num_episodes) + args.evaluate_args.split()
    missing = [j for j in jobs if not os.path.isfile(eval_path(*j))]
    todo = [] if args.plot_only else missing
    print(f"{len(agents)} median agents, {len(jobs)} evaluations, {len(jobs) - len(missing)} already done, "
          f"{len(todo)} to do with {args.workers} workers" + (" (--plot-only)" if args.plot_only else ""), flush=True)
    start, failed, seconds = time.time(), [], {"gradient": [], "paad": []}
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(evaluate, j, flags[j[0]]) for j in todo]
        for done, future in enumerate(as_completed(futures), 1):
            (seed_dir, eps, kind), error, took = future.result()
            if error is None:
                seconds[kind].append(took)
            else:
                failed.append(f"{seed_dir} at eps {eps:g} ({kind}): {error}")
            left = [j for j, f in zip(todo, futures) if not f.done()]
            guess = sum(np.mean(seconds[k]) if seconds[k] else np.nan for _, _, k in left) / args.workers
            eta = "?" if np.isnan(guess) else f"{guess / 60:.0f} min"
            print(f"[{done}/{len(todo)}] {os.path.relpath(seed_dir, args.root)} eps {eps:g} {kind}: "
                  f"{'ok' if error is None else 'failed'} in {took / 60:.1f} min; elapsed {(time.time() - start) / 60:.1f} min, ETA {eta}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.figures, exist_ok=True)
    made_by = (f"python eps_curve.py --root {args.root} --envs ENV --multiples {' '.join(f'{m:g}' for m in args.multiples)} "
               f"--paad-multiples {' '.join(f'{m:g}' for m in args.paad_multiples)}"
               + (f" --num-episodes {args.num_episodes}" if args.num_episodes else "")
               + (f' --evaluate-args="{args.evaluate_args}"' if args.evaluate_args else ""))
    sections = []
    for env_id in args.envs:
        rows = {algo: agents[e, algo] for e, algo in agents if e == env_id}
        if not rows:
            continue
        eps_values = {report["epsilon"] for _, report in rows.values()}
        if len(eps_values) > 1:
            raise SystemExit(f"error: the {env_id} agents were evaluated at different ε {sorted(eps_values)}; one curve needs one ε")
        eps = eps_values.pop()
        ms = sorted(set(args.multiples))
        header = ["algorithm", "seed"] + [f"{m:g}×" for m in ms] + [f"PA-AD {m:g}×" for m in args.paad_multiples]
        lines = [f"## {env_id}: robustness against the attack radius ({args.root})", "",
                 f"Made by `{made_by.replace('ENV', env_id)}`. Each algorithm's median agent (the seed with the median worst "
                 "case) under the strongest of the gradient attacks (random, critic, MAD, Robust Sarsa) at multiples of the "
                 f"evaluation ε = {eps:g}, with the protocol of its eval.json (the 1× point); PA-AD columns: a learned "
                 "adversary trained at that radius. The ranking orders the algorithms by their gradient worst case.", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        gradient_at = {}
        for i, (algo, (seed_dir, report)) in enumerate(rows.items()):
            points = curve(seed_dir, report, ms, args.paad_multiples)
            grad = {m: (points[m]["natural"] if m == 0 else min((v for a, v in points.get(m, {}).items() if a in GRADIENT), default=None))
                    for m in ms}
            paad = {m: points.get(m, {}).get("paad") for m in args.paad_multiples}
            gradient_at[algo] = grad
            xs = [m for m in ms if grad[m] is not None]
            color = f"C{i % 10}"
            ax.plot([m * eps for m in xs], [grad[m] for m in xs], "-o", color=color, label=algo)
            px = [m for m in args.paad_multiples if paad[m] is not None]
            ax.plot([m * eps for m in px], [paad[m] for m in px], "x", ms=9, color=color)
            cells = [algo, os.path.basename(seed_dir)] + ["–" if v is None else f"{v:.0f}" for v in list(grad.values()) + list(paad.values())]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Ranking by the gradient worst case (best first):", ""]
        for m in ms:
            ranked = sorted((a for a in gradient_at if gradient_at[a][m] is not None), key=lambda a: -gradient_at[a][m])
            lines.append(f"- {m:g}× ε: " + (" > ".join(ranked) if ranked else "–"))
        if args.paad_multiples:
            ax.plot([], [], "x", color="k", label="PA-AD (×)")
        ax.axvline(eps, color="0.7", lw=0.8, ls=":")
        ax.set(title=f"{env_id}: median agents against the attack radius", xlabel="ε (normalised observation units)",
               ylabel="return under the strongest gradient attack")
        ax.legend(fontsize=8)
        fig.tight_layout()
        png = os.path.join(args.figures, f"eps_curve_{env_id}.png")
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += ["", f"![{env_id} epsilon curve]({os.path.relpath(png, os.path.dirname(args.output) or '.')})", ""]
        write_section(args.output, f"eps_curve {args.root} {env_id}", "\n".join(lines), new_file_head="# Results\n")
        sections += lines
    print("\n".join(sections))
    if failed:
        raise SystemExit(f"error: {len(failed)} evaluation(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main(tyro.cli(Args))
