"""Reporting on a sweep's evaluated runs: interquartile means with 95 % stratified-bootstrap confidence intervals,
probability of improvement and performance profiles (rliable), the paper's claims decided by those intervals, the κ
study, and the figures, written into docs/results.md between marker comments (write_section, which eps_curve.py and
throughput.py use for their own sections).

    python report.py aggregate --root results/quick           # docs/results.md + docs/figures/*.png
    python report.py aggregate --root results/paper --title "Paper preset (2M steps), results/paper"
    python report.py diagnostics --root results/paper --env-id HalfCheetah-v5   # collapse scalars over training

The runs are benchmark.py's (the sweep runner: training, export, evaluation): this file reads what it exports,
<root>/<env>/<algo>/s<seed>/{eval.json,agent.pt,curve.csv}, and its table of algorithms, and trains nothing.
"""
import contextlib
import glob
import os
import sys
import warnings
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import tyro

from benchmark import ALGO_GROUPS, ALGOS, agent_problem, env_family, read_eval

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
# the κ study: benchmark.py's group `kappa`, each algorithm with the --kappa its flags give it
KAPPA_STUDY = {a: float(ALGOS[a][1][ALGOS[a][1].index("--kappa") + 1]) for a in ALGO_GROUPS["kappa"]}


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


@dataclass
class Diagnostics:
    """Plot the collapse diagnostics the robust scripts log (ε_t, the spread of the mean action over a minibatch,
    the mean input sensitivity ‖∂μ/∂s‖) over training, one line per run, from each run's diagnostics.csv."""

    root: str = "results/paper"
    """where the runs are: <root>/<env>/<algo>/s<seed>/diagnostics.csv"""
    env_id: str = "HalfCheetah-v5"
    """the environment whose runs are plotted"""
    algos: Optional[List[str]] = None
    """the algorithms to plot (None: every one with a diagnostics.csv)"""
    output: Optional[str] = None
    """the figure, .png, .pdf or .svg (None: docs/figures/diagnostics_<root name>_<env>.png)"""
    smooth: int = 10
    """moving average over this many iterations (the raw per-minibatch-set values are noisy)"""


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


@contextlib.contextmanager
def seeded_rliable(seed=0):
    """rliable 1.2 hands random_state to arch, yet its resampling draws from numpy's global generator (two calls with
    the same random_state gave different intervals): seed that generator for the block and put it back after, so that
    intervals and profiles are the same from one aggregate to the next. Also quiets arch's notice about RandomState."""
    global_state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            yield
    finally:
        np.random.set_state(global_state)


def bootstrap(score_dict, func, reps, seed=0):
    """rliable's stratified-bootstrap point estimate and 95 % CI of func over {name: runs (x tasks)}: {name: (point, lo, hi)}."""
    from rliable import library as rly

    with seeded_rliable(seed):
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
             f"Aggregated by `python report.py aggregate --root {args.root}` from {n_runs} evaluated runs"
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
            with seeded_rliable():
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


def read_diagnostics(path):
    """{column: values} of one diagnostics.csv: step, action_spread, input_sensitivity and, for the robust scripts,
    epsilon (SPO has no ε); raises ValueError with a one-line reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about an empty file; it is reported as having no rows below
        if os.path.getsize(path) == 0:
            raise ValueError("the file is empty")
        try:
            data = np.genfromtxt(path, delimiter=",", names=True)
        except ValueError as e:
            raise ValueError(str(e).strip().splitlines()[0])
    names = data.dtype.names or ()
    missing = [c for c in ("step", "action_spread", "input_sensitivity") if c not in names]
    if missing:
        raise ValueError(f"no column {', '.join(missing)} (step,[epsilon,]action_spread,input_sensitivity)")
    values = {c: np.atleast_1d(data[c]).astype(float) for c in ("step", "action_spread", "input_sensitivity", "epsilon")
              if c in names}
    if not all(np.isfinite(v).all() for v in values.values()):
        raise ValueError("a value is not a finite number")
    return values


def diagnostics(args: Diagnostics):
    """One figure, three panels sharing the step axis; a collapsed policy shows as an action spread near 0 (the
    same action whatever the state) with its input sensitivity near 0."""
    if args.smooth < 1:
        raise SystemExit(f"error: --smooth must be >= 1, got {args.smooth}")
    name = os.path.basename(os.path.normpath(args.root))
    png = args.output or os.path.join("docs", "figures", f"diagnostics_{name}_{args.env_id}.png")
    if os.path.splitext(png)[1].lower() not in (".png", ".pdf", ".svg"):
        raise SystemExit(f"error: --output {png!r}: name a .png, .pdf or .svg file")
    pattern = os.path.join(args.root, args.env_id, "*", "s*", "diagnostics.csv")
    runs, empty = {}, []
    for path in sorted(glob.glob(pattern)):
        algo, seed = path.split(os.sep)[-3:-1]
        if args.algos is None or algo in args.algos:
            try:
                values = read_diagnostics(path)
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: {path} cannot be plotted: {e}")
            if len(values["step"]):
                runs[algo, seed] = values
            else:
                empty.append(f"{algo}/{seed}: {path} has no rows")
    if not runs:
        raise SystemExit(f"error: no diagnostics.csv with rows under {pattern}" + (f" for {', '.join(args.algos)}" if args.algos else "")
                         + (f" ({'; '.join(empty)})" if empty else ""))
    for line in empty:
        print(f"left out {line}", file=sys.stderr)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("action_spread", "mean-action spread over a minibatch"), ("input_sensitivity", "mean ‖∂μ/∂s‖"),
               ("epsilon", "ε_t")]
    fig, axes = plt.subplots(len(columns), 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1]})
    palette = plt.get_cmap("tab20")  # a colour per algorithm (20 before one repeats), a line style per seed of it
    colours = {a: palette(i % 20) for i, a in enumerate(dict.fromkeys(a for a, _ in runs))}
    styles, nth = ["-", "--", ":", "-."], {}
    for algo, seed in runs:
        nth[algo, seed] = sum(a == algo for a, _ in nth)
    for (algo, seed), values in runs.items():
        step, width = values["step"], min(args.smooth, len(values["step"]))
        for ax, (column, _) in zip(axes, columns):
            if column not in values:
                continue  # SPO logs no ε
            y = values[column] if column == "epsilon" else np.convolve(values[column], np.ones(width) / width, mode="valid")
            x = step if column == "epsilon" else step[width - 1:]
            ax.plot(x, y, color=colours[algo], ls=styles[nth[algo, seed] % len(styles)], lw=1, label=f"{algo} {seed}")
    for ax, (_, label) in zip(axes, columns):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{args.env_id}: collapse diagnostics over training ({args.smooth}-iteration moving average)")
    axes[0].legend(fontsize=7, ncol=2)
    axes[-1].set_xlabel("environment steps")
    fig.tight_layout()
    try:
        os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
        fig.savefig(png, dpi=110)
    except OSError as e:
        raise SystemExit(f"error: cannot write {png}: {e}")
    plt.close(fig)
    print(f"{len(runs)} runs: " + ", ".join(f"{a}/{s}" for a, s in runs))
    print(f"wrote {png}")


if __name__ == "__main__":
    args = tyro.extras.subcommand_cli_from_dict({"aggregate": Aggregate, "diagnostics": Diagnostics})
    (diagnostics if isinstance(args, Diagnostics) else aggregate)(args)
