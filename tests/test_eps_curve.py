"""eps_curve.py: picks each algorithm's median agent, evaluates it at multiples of ε once, and draws from the JSONs."""
import json
import os
import shutil

import torch

from conftest import REPO, assert_one_line_error, refused, run_script
from eps_curve import jobs_of, median_agent

FIXTURE = os.path.join(REPO, "tests", "fixtures", "results", "quick", "Hopper-v5", "spo", "s1")


def test_median_agent_is_the_middle_gradient_worst_case(tmp_path):
    dirs = []
    for seed, (worst, learned) in enumerate([(500, 20), (100, None), (300, None), (900, None)], 1):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        torch.save({"env_id": "Hopper-v5", "agent": {}, "obs_rms": {}}, d / "agent.pt")  # a readable agent: a candidate
        results = {"natural": {"mean": 1000}, "random": {"mean": worst + 1}, "mad": {"mean": worst}}
        results.update({"paad": {"mean": learned}} if learned is not None else {})
        (d / "eval.json").write_text(json.dumps({"epsilon": 0.075, "results": results,
                                                 "worst_case": min(r["mean"] for k, r in results.items() if k != "natural")}))
        dirs.append(str(d))
    # s1's PA-AD (20) would make it the lowest by its eval.json worst case; the median is taken over the
    # gradient attacks, which every seed faced: 100, 300, 500 -> 300
    seed_dir, report, spread = median_agent(dirs[:3])
    assert seed_dir == dirs[2] and spread == [100, 300, 500]
    assert median_agent(dirs)[0] == dirs[2]  # 100, 300, 500, 900 -> the lower middle, 300
    os.remove(os.path.join(dirs[2], "agent.pt"))  # a run without its agent cannot be evaluated: not a candidate
    assert median_agent(dirs[:3])[0] == dirs[1]  # 100, 500 -> the lower middle


def test_jobs_train_pa_ad_at_the_evaluation_radius_only_when_the_run_has_none():
    report = {"epsilon": 0.1, "results": {"natural": {"mean": 1.0}, "mad": {"mean": 0.5}}}
    jobs = jobs_of("d", report, [0, 0.5, 1, 2], [1, 2])
    assert jobs == [("d", 0.05, "gradient"), ("d", 0.2, "gradient"), ("d", 0.1, "paad"), ("d", 0.2, "paad")]
    report["results"]["paad"] = {"mean": 0.2}  # PA-AD at 1x is in eval.json: only 2x is trained
    assert [j for j in jobs_of("d", report, [0, 0.5, 1, 2], [1, 2]) if j[2] == "paad"] == [("d", 0.2, "paad")]


def test_eps_curve_refuses_what_it_cannot_draw(tmp_path):
    assert_one_line_error(refused("eps_curve.py", "--root", tmp_path), "no runs for Hopper-v5")
    (tmp_path / "Hopper-v5" / "spo").mkdir(parents=True)
    assert_one_line_error(refused("eps_curve.py", "--root", tmp_path), "no evaluated run")
    assert_one_line_error(refused("eps_curve.py", "--root", tmp_path, "--algos", "nope"), "unknown algorithm")


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
    # seeds and their spread, natural, 1x from eval.json, 2x measured, PA-AD 1x from eval.json
    assert row[2:] == ["1: 50–50", "100", "50", f"{worst2:.0f}", "30"]
    assert "- 1× ε: barpo_k1 > spo" in text
    assert f"<!-- begin eps_curve {root} Hopper-v5 -->" in text  # each task has its own section: drawing another keeps it
    assert (tmp_path / "fig" / "eps_curve_Hopper-v5.png").stat().st_size > 10_000
    again = run_script("eps_curve.py", *args).stdout  # everything exists now: nothing is evaluated again
    assert "0 to do" in again and json.loads((root / "Hopper-v5" / "spo" / "s1" / "eval_eps0.15_gradient.json").read_text()) == at2
    other = list(args) + ["--plot-only", "--output", tmp_path / "r2.md"]
    other[other.index("--num-episodes") + 1] = "3"
    stale = run_script("eps_curve.py", *other).stdout  # another protocol (3 episodes): the 2-episode points are not reused
    assert "2 evaluations, 0 already done" in stale
