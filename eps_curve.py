"""Robustness against the attack budget: each algorithm's median agent under the attacks at multiples of ε.

    python eps_curve.py --root results/quick --envs Hopper-v5 Walker2d-v5 --workers 2
    python eps_curve.py --root results/quick --envs Hopper-v5 --plot-only      # redraw from the committed JSONs

For every algorithm with evaluated runs under <root>/<env>/<algo>/s<seed>/, its median agent is the seed whose
worst case over the gradient attacks (random, critic, MAD, Robust Sarsa, from its eval.json) is the median of
its seeds (the lower of the two middle ones for an even count): every seed faced those, and they are what the
curve plots. That agent is evaluated by evaluate.py with the gradient attacks at ε × {0.5, 1.5, 2} of the
task's evaluation ε (1× is its eval.json and 0× its natural return), and with PA-AD at 2× (an adversary trained
at that radius, --train-learned; 1× is in eval.json, or trained here if the run has no PA-AD yet). Each
evaluation is written next to the agent (eval_eps<ε>_gradient.json, eval_eps<ε>_paad.json) and reused if it
has the agent's protocol, so an interrupted run resumes and the figure can be redrawn from committed files.

Every point uses the protocol of the agent's eval.json (its number of episodes, deterministic or sampled
actions, MAD's β, the attack steps, Robust Sarsa's grid if it used one). Output, per task: a markdown table
with the return under the strongest gradient attack per multiple, the seeds' spread, and the ranking of the
algorithms at each multiple (printed, and written to --output in the task's own section between marker
comments, so tasks can be drawn one at a time), and <figures>/eps_curve_<env>.png. Cost, measured 2026-12-03
on Hopper-v5 (seven median agents, one worker, three processes sharing the machine's two cores): a gradient
point (four attacks, 50 episodes, Robust Sarsa's Q model cached) took 0.6-1.7 min, the 21 points 26 min; a
PA-AD adversary at a new radius costs what the sweep's PA-AD costs, 5-8 min, so about 10-12 min per agent
with the default --paad-multiples 1 2.
"""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import tyro

from benchmark import ALGOS, agent_problem, read_eval
from report import write_section

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


def gradient_worst(report):
    """The lowest return over the gradient attacks of an eval.json (the score the curve plots), None without them."""
    values = [r["mean"] for a, r in report["results"].items() if a in GRADIENT]
    return min(values) if values else None


def median_agent(seed_dirs, skipped=None):
    """(seed directory, its eval.json, the gradient worst cases of all seeds): the seed whose worst case over the
    gradient attacks is the median of the seeds' (lower middle for an even count). The gradient attacks, not the
    eval.json worst case, because every seed faced them and they are what the curve plots: a seed not yet attacked
    by the learned adversaries would otherwise look stronger than it is. A seed whose eval.json or agent.pt cannot
    be read is no candidate; it is named in `skipped` (a list) if given."""
    scored = []
    for d in seed_dirs:
        report, problem = read_eval(os.path.join(d, "eval.json"))
        if problem is None and os.path.isfile(os.path.join(d, "agent.pt")):
            problem = agent_problem(d)
        if problem is not None:
            if skipped is not None:
                skipped.append(f"{d}: {problem}")
            continue
        score = gradient_worst(report)
        if isinstance(report.get("epsilon"), (int, float)) and np.isfinite(report["epsilon"]) and score is not None \
                and os.path.isfile(os.path.join(d, "agent.pt")):
            scored.append((score, d, report))
    if not scored:
        return None, None, []
    scored.sort(key=lambda t: t[0])
    _, d, report = scored[(len(scored) - 1) // 2]
    return d, report, [t[0] for t in scored]


def eval_path(seed_dir, eps, kind):
    return os.path.join(seed_dir, f"eval_eps{eps:g}_{kind}.json")


# minutes per evaluation until this run has measured its own (one core, 2026-12-03, Hopper-v5, 50 episodes): the four
# gradient attacks at one ε 0.6-1.7 min, a PA-AD adversary (1M steps) plus its evaluation 5-8 min
FIRST_GUESS = {"gradient": 1.2 * 60, "paad": 6.5 * 60}
PROTOCOL = ("num_episodes", "deterministic", "mad_betas", "attack_steps")  # eval.json fields a cached point must share


def protocol(report, num_episodes):
    """The protocol of the agent's eval.json (the 1x point) that every other point repeats: {field: value}."""
    wanted = {k: report[k] for k in PROTOCOL if k in report}
    return dict(wanted, num_episodes=num_episodes or report.get("num_episodes", 50))


def protocol_flags(report, num_episodes):
    """evaluate.py flags for that protocol: episodes, stochastic or not, MAD's β, attack steps, and Robust Sarsa's
    grid of Q models if the eval.json used one."""
    p = protocol(report, num_episodes)
    flags = ["--num-episodes", str(p["num_episodes"])]
    flags += ["--stochastic"] if p.get("deterministic") is False else []
    flags += ["--mad-betas", ",".join(f"{b:g}" for b in p["mad_betas"])] if "mad_betas" in p else []
    flags += ["--attack-steps", str(p["attack_steps"])] if "attack_steps" in p else []
    return flags + (["--rs-grid"] if report["results"].get("rs", {}).get("variants_evaluated", 1) > 1 else [])


def cached(path, wanted):
    """A point's JSON if it exists and was evaluated with the wanted protocol, else None (then it is redone;
    evaluate.py replaces the file only once the new evaluation has finished). --evaluate-args are not recorded
    in the JSON: after changing them, delete the eval_eps*.json files to redo the points."""
    point = read_eval(path)[0] if os.path.isfile(path) else None  # an unreadable point is redone, like a missing one
    return point if point is not None and all(point.get(k) == v for k, v in wanted.items()) else None


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


def jobs_of(seed_dir, report, multiples, paad_multiples):
    """The evaluations a curve needs beyond eval.json: (seed_dir, ε, kind) for the gradient attacks at every multiple
    other than 0 and 1, and PA-AD at every PA-AD multiple (at 1 only if eval.json has no PA-AD)."""
    eps = report["epsilon"]
    jobs = [(seed_dir, m * eps, "gradient") for m in multiples if m not in (0, 1)]
    return jobs + [(seed_dir, m * eps, "paad") for m in paad_multiples if m != 1 or "paad" not in report["results"]]


def curve(seed_dir, report, multiples, paad_multiples, wanted):
    """{multiple: {attack: mean return}} from the JSONs that exist (1x from eval.json, 0x its natural return)."""
    eps = report["epsilon"]
    needed = set(jobs_of(seed_dir, report, multiples, paad_multiples))  # the rest is in eval.json (or not asked for)
    points = {0.0: {"natural": report["results"]["natural"]["mean"]}}
    for m in sorted(set(multiples) | set(paad_multiples)):
        if m == 0:
            continue
        results = dict(report["results"]) if m == 1 else {}
        for kind in ("gradient", "paad"):
            point = cached(eval_path(seed_dir, m * eps, kind), wanted) if (seed_dir, m * eps, kind) in needed else None
            if point is not None:
                results.update(point["results"])
        results.pop("natural", None)
        if results:
            points[m] = {a: r["mean"] for a, r in results.items()}
    return points


def main(args):
    if (args.num_episodes is not None and args.num_episodes < 1) or args.workers < 1:
        raise SystemExit("error: --num-episodes and --workers must be positive")
    for flag, values in (("--multiples", args.multiples), ("--paad-multiples", args.paad_multiples)):
        if not all(0 <= m < np.inf for m in values):  # nan fails
            raise SystemExit(f"error: {flag} must be finite numbers >= 0, got {' '.join(map(str, values))}")
    args.multiples = sorted(set(args.multiples))
    args.paad_multiples = sorted({m for m in args.paad_multiples if m > 0})  # PA-AD at radius 0 is the natural return
    unknown = [a for a in args.algos if a not in ALGOS]
    if unknown:
        raise SystemExit(f"error: unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(ALGOS)}")
    shown_root = args.root  # as given, for the report; evaluate.py runs from the repository, wherever this was called from
    args.root = os.path.abspath(args.root)
    agents, notes, skipped = {}, [], []  # (env, algo) -> (seed_dir, report, the seeds' gradient worst cases)
    for env_id in args.envs:
        env_dir = os.path.join(args.root, env_id)
        if not os.path.isdir(env_dir):
            raise SystemExit(f"error: no runs for {env_id} under {args.root}")
        algos = args.algos or sorted(os.listdir(env_dir), key=lambda a: list(ALGOS).index(a) if a in ALGOS else len(ALGOS))
        for algo in algos:
            seeds = sorted(os.path.join(env_dir, algo, s) for s in os.listdir(os.path.join(env_dir, algo))
                           if os.path.isfile(os.path.join(env_dir, algo, s, "eval.json"))) if os.path.isdir(os.path.join(env_dir, algo)) else []
            seed_dir, report, spread = median_agent(seeds, skipped)
            if seed_dir is None:
                notes.append(f"note: {env_id}/{algo} has no run evaluated with the gradient attacks; left out")
                continue
            agents[env_id, algo] = (seed_dir, report, spread)
    if not agents:
        raise SystemExit(f"error: no evaluated run (agent.pt and eval.json with the gradient attacks) for "
                         f"{', '.join(args.envs)}{' / ' + ', '.join(args.algos) if args.algos else ''} under {args.root}")
    for note in notes + [f"note: skipped {s}" for s in skipped]:
        print(note, file=sys.stderr)
    from evaluate import OBS_CLIP

    for (env_id, algo), (seed_dir, report, _) in agents.items():  # every radius of the curve within the observation clip
        largest = max(args.multiples + args.paad_multiples, default=0) * report["epsilon"]
        if largest > OBS_CLIP:
            raise SystemExit(f"error: --multiples / --paad-multiples reach ε = {largest:g} for {env_id}/{algo} "
                             f"(ε = {report['epsilon']:g}), beyond the observation clip ±{OBS_CLIP:g}")
    jobs, flags, wanted = [], {}, {}
    for seed_dir, report, _ in agents.values():
        jobs += jobs_of(seed_dir, report, args.multiples, args.paad_multiples)
        flags[seed_dir] = protocol_flags(report, args.num_episodes) + args.evaluate_args.split()
        wanted[seed_dir] = protocol(report, args.num_episodes)
    missing = [j for j in jobs if cached(eval_path(*j), wanted[j[0]]) is None]
    todo = [] if args.plot_only else missing
    guess = sum(FIRST_GUESS[k] for _, _, k in todo) / args.workers
    print(f"{len(agents)} median agents, {len(jobs)} evaluations, {len(jobs) - len(missing)} already done, "
          f"{len(todo)} to do with {args.workers} workers" + (" (--plot-only)" if args.plot_only else f", about {guess / 60:.0f} min"), flush=True)
    start, failed, seconds = time.time(), [], {"gradient": [], "paad": []}
    pool = ThreadPoolExecutor(max_workers=args.workers)
    futures = [pool.submit(evaluate, j, flags[j[0]]) for j in todo]
    try:
        for done, future in enumerate(as_completed(futures), 1):
            (seed_dir, eps, kind), error, took = future.result()
            if error is None:
                seconds[kind].append(took)
            else:
                failed.append(f"{seed_dir} at eps {eps:g} ({kind}): {error}")
            left = [j for j, f in zip(todo, futures) if not f.done()]
            guess = sum(np.mean(seconds[k]) if seconds[k] else FIRST_GUESS[k] for _, _, k in left) / args.workers
            eta = f"{guess / 60:.0f} min"
            print(f"[{done}/{len(todo)}] {os.path.relpath(seed_dir, args.root)} eps {eps:g} {kind}: "
                  f"{'ok' if error is None else 'failed'} in {took / 60:.1f} min; elapsed {(time.time() - start) / 60:.1f} min, ETA {eta}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C also stops the running evaluate.py (same process group); start no queued one
        pool.shutdown(wait=False, cancel_futures=True)
        raise SystemExit("interrupted: the finished points are kept (eval_eps*.json); run the same command to resume")
    pool.shutdown()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.figures, exist_ok=True)
    made_by = (f"python eps_curve.py --root {shown_root} --envs ENV" + (f" --algos {' '.join(args.algos)}" if args.algos else "")
               + f" --multiples {' '.join(f'{m:g}' for m in args.multiples)} "
               f"--paad-multiples {' '.join(f'{m:g}' for m in args.paad_multiples)}"
               + (f" --num-episodes {args.num_episodes}" if args.num_episodes else "")
               + (f' --evaluate-args="{args.evaluate_args}"' if args.evaluate_args else ""))
    sections = []
    for env_id in args.envs:
        rows = {algo: agents[e, algo] for e, algo in agents if e == env_id}
        if not rows:
            continue
        eps_values = {report["epsilon"] for _, report, _ in rows.values()}
        if len(eps_values) > 1:
            raise SystemExit(f"error: the {env_id} agents were evaluated at different ε {sorted(eps_values)}; one curve needs one ε")
        eps = eps_values.pop()
        ms = sorted(set(args.multiples))
        header = ["algorithm", "median seed", "seeds: gradient worst case at 1×, min–max"] + [f"{m:g}×" for m in ms] + [f"PA-AD {m:g}×" for m in args.paad_multiples]
        lines = [f"## {env_id}: robustness against the attack radius ({shown_root})", "",
                 f"Made by `{made_by.replace('ENV', env_id)}`. Each algorithm's median agent (the seed whose worst case over "
                 "the gradient attacks is the median of its seeds') under the strongest of the gradient attacks (random, "
                 f"critic, MAD, Robust Sarsa) at multiples of the evaluation ε = {eps:g}, with the protocol of its eval.json "
                 "(the 1× point); PA-AD columns: a learned adversary trained against that agent at that radius. One agent per "
                 "algorithm, so a ranking is only as good as the gap between neighbours: compare it with the spread of the "
                 "seeds (third column) before reading an order into it.", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        gradient_at = {}
        for i, (algo, (seed_dir, report, spread)) in enumerate(rows.items()):
            points = curve(seed_dir, report, ms, args.paad_multiples, wanted[seed_dir])
            grad = {m: (points[m]["natural"] if m == 0 else min((v for a, v in points.get(m, {}).items() if a in GRADIENT), default=None))
                    for m in ms}
            paad = {m: points.get(m, {}).get("paad") for m in args.paad_multiples}
            gradient_at[algo] = grad
            xs = [m for m in ms if grad[m] is not None]
            color = f"C{i % 10}"
            ax.plot([m * eps for m in xs], [grad[m] for m in xs], "-o", color=color, label=algo)
            px = [m for m in args.paad_multiples if paad[m] is not None]
            ax.plot([m * eps for m in px], [paad[m] for m in px], "x", ms=9, color=color)
            cells = [algo, os.path.basename(seed_dir), f"{len(spread)}: {min(spread):.0f}–{max(spread):.0f}"] + ["–" if v is None else f"{v:.0f}" for v in list(grad.values()) + list(paad.values())]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Ranking by the gradient worst case (best first):", ""]
        for m in ms:
            ranked = sorted((a for a in gradient_at if gradient_at[a][m] is not None), key=lambda a: -gradient_at[a][m])
            absent = [a for a in gradient_at if gradient_at[a][m] is None]
            lines.append(f"- {m:g}× ε: " + (" > ".join(ranked) if ranked else "–")
                         + (f" (not evaluated: {', '.join(absent)})" if absent else ""))
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
        write_section(args.output, f"eps_curve {shown_root} {env_id}", "\n".join(lines), new_file_head="# Results\n")
        sections += lines
    print("\n".join(sections))
    if failed:
        raise SystemExit(f"error: {len(failed)} evaluation(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main(tyro.cli(Args))
