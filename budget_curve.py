"""Budget curves of the learned attacks: the victim's return against the adversary's training steps.

    python learned_attack.py sarl <dir>/agent.pt --early-stop-window 0 --total-timesteps 1500000 \\
        --eval-at 250000 500000 1000000 1500000       # at each step: mean and sampled adversary, 50 episodes
    python learned_attack.py paad <dir>/agent.pt --early-stop-window 0 --total-timesteps 1500000 --eval-at ...
    python budget_curve.py <dir>/sarl_eps0.075.pt <dir>/paad_eps0.075.pt --output docs/figures/budget.png

Reads the `curve` learned_attack.py stores in the adversary checkpoint (--eval-at) and, if evaluate.py's
eval*.json lies next to the victim, its natural, random and gradient-attack returns as reference lines.
Prints one markdown table row per curve point (the stronger of the mean and sampled adversary is the attack's
return, as evaluate.py reports it).
"""
import glob
import json
import os
from dataclasses import dataclass
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402


REFERENCE_COLORS = {"natural": "black", "random": "0.6", "critic": "tab:olive", "mad": "tab:purple", "rs": "tab:brown"}


@dataclass
class Args:
    adversaries: tyro.conf.Positional[List[str]]
    """adversary checkpoints (sarl_eps*.pt / paad_eps*.pt) trained with --eval-at"""
    output: str = "budget_curve.png"
    """where to write the figure"""


def reference_returns(victim_dir):
    """{attack: mean return} from the evaluate.py report next to the victim (the one with most attacks), or {}."""
    reports = [json.load(open(path)) for path in glob.glob(os.path.join(victim_dir, "eval*.json"))]
    return max((r["results"] for r in reports), key=len, default={})


def main(args):
    victims = {}
    for path in args.adversaries:
        adv = torch.load(path, map_location="cpu", weights_only=True)
        if not adv.get("curve"):
            raise SystemExit(f"error: {path} has no budget curve; train it with --eval-at")
        victims.setdefault(os.path.dirname(os.path.abspath(path)), []).append(adv)
    fig, axes = plt.subplots(1, len(victims), figsize=(5 * len(victims), 3.8), squeeze=False)
    print("| victim | attack | steps | mean adversary | sampled adversary | attack (min) | training CPU time |")
    print("|---|---|---|---|---|---|---|")
    for ax, (victim_dir, advs) in zip(axes[0], victims.items()):
        name = os.path.basename(victim_dir)
        for adv in advs:
            steps = [p["step"] / 1e6 for p in adv["curve"]]
            for label, style in (("mean", "-o"), ("sampled", "--x")):
                ax.plot(steps, [p[label] for p in adv["curve"]], style, label=f"{adv['attack']} ({label})")
            for p in adv["curve"]:
                print(f"| {name} | {adv['attack']} | {p['step']} | {p['mean']:.0f} | {p['sampled']:.0f} | "
                      f"{min(p['mean'], p['sampled']):.0f} | {p['train_cpu_seconds'] / 60:.1f} min |")
        for attack, result in reference_returns(victim_dir).items():
            if attack not in ("sarl", "paad"):
                ax.axhline(result["mean"], lw=1, ls=":", color=REFERENCE_COLORS.get(attack, "0.5"), label=attack)
        ax.set(title=f"{advs[0]['env_id']}: {name}", xlabel="adversary training steps (M)", ylabel="victim return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main(tyro.cli(Args))
