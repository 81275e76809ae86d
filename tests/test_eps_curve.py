"""eps_curve.py: picks each algorithm's median agent, evaluates it at multiples of ε once, and draws from the JSONs."""
import json
import os
import shutil

from conftest import REPO, run_script
from eps_curve import median_agent

FIXTURE = os.path.join(REPO, "tests", "fixtures", "results", "quick", "Hopper-v5", "spo", "s1")


def test_median_agent_is_the_middle_worst_case(tmp_path):
    dirs = []
    for seed, worst in enumerate([500, 100, 300, 900], 1):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({"worst_case": worst}))
        dirs.append(str(d))
    assert median_agent(dirs[:3])[0] == dirs[2]  # 100, 300, 500 -> 300
    assert median_agent(dirs)[0] == dirs[2]  # 100, 300, 500, 900 -> the lower middle, 300


def test_eps_curve_evaluates_each_multiple_once_and_ranks(tmp_path):
    root = tmp_path / "quick"
    for algo, worst in (("spo", 50.0), ("barpo_k1", 80.0)):
        d = root / "Hopper-v5" / algo / "s1"
        shutil.copytree(FIXTURE, d)
        (d / "eval.json").write_text(json.dumps({"epsilon": 0.075, "worst_case": worst, "results": {
            "natural": {"mean": 100.0}, "random": {"mean": worst + 5}, "mad": {"mean": worst}, "paad": {"mean": worst - 20}}}))
    args = ["--root", root, "--envs", "Hopper-v5", "--multiples", "0", "1", "2", "--paad-multiples", "1",
            "--num-episodes", "2", "--evaluate-args=--rs-steps 2000 --rs-epochs 1",
            "--output", tmp_path / "r.md", "--figures", tmp_path / "fig"]
    out = run_script("eps_curve.py", *args, timeout=600).stdout
    assert "2 median agents, 2 evaluations, 0 already done, 2 to do" in out
    at2 = json.loads((root / "Hopper-v5" / "spo" / "s1" / "eval_eps0.15_gradient.json").read_text())
    assert at2["epsilon"] == 0.15 and {"random", "critic", "mad", "rs"} <= set(at2["results"])
    text = (tmp_path / "r.md").read_text()
    row = next(l for l in text.splitlines() if l.startswith("| spo | s1 |")).strip("| ").split(" | ")
    worst2 = min(at2["results"][a]["mean"] for a in ("random", "critic", "mad", "rs"))
    assert row[2:] == ["100", "50", f"{worst2:.0f}", "30"]  # natural, 1x from eval.json, 2x measured, PA-AD 1x
    assert "- 1× ε: barpo_k1 > spo" in text
    assert f"<!-- begin eps_curve {root} Hopper-v5 -->" in text  # each task has its own section: drawing another keeps it
    assert (tmp_path / "fig" / "eps_curve_Hopper-v5.png").stat().st_size > 10_000
    again = run_script("eps_curve.py", *args).stdout  # everything exists now: nothing is evaluated again
    assert "0 to do" in again and json.loads((root / "Hopper-v5" / "spo" / "s1" / "eval_eps0.15_gradient.json").read_text()) == at2
