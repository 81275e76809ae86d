"""report.py: the aggregation of a sweep's evaluated runs (IQM with bootstrap intervals, probability of improvement),
the paper's claims and the κ study decided by those intervals, the figures, and the markdown sections it writes."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, assert_one_line_error, refused, run_script, write_eval


def cells(text, algo):
    """The cells of algo's row in the main table."""
    return next(line for line in text.splitlines() if line.startswith(f"| {algo} | ")).strip("| ").split(" | ")


def interval(cell):
    point, lo, hi = (float(x) for x in re.fullmatch(r"([-+\d.]+)%? \[([-+\d.]+)%?, ([-+\d.]+)%?\]", cell).groups())
    return point, lo, hi


def aggregate(root, out, figures):
    """report.py aggregate in this process, with the fewest resamples it accepts: the CLI itself is run once, by the
    first test; here the numbers matter, and each fresh interpreter would cost a few seconds of imports and warm-up."""
    import contextlib
    import io

    import report

    with contextlib.redirect_stdout(io.StringIO()):
        report.aggregate(report.Aggregate(root=str(root), output=str(out), figures=str(figures), bootstrap_reps=100))


def test_aggregate_iqm_with_bootstrap_intervals_from_fixture_runs(tmp_path):
    root = tmp_path / "sweep"
    for seed, (nat, mad) in enumerate([(1000, 400), (3000, 900), (2000, 100), (4000, 2000)], 1):
        write_eval(root, "Hopper-v5", "barpo_k1", seed, nat, {"mad": mad, "random": nat - 10})
    write_eval(root, "Hopper-v5", "spo", 1, 3000, {"mad": 300, "random": 2500})
    missing = write_eval(root, "Hopper-v5", "spo", 2, 10, {"mad": 5, "random": 5}, agent=False)
    broken = write_eval(root, "Hopper-v5", "spo", 3, 10, {"mad": 5, "random": 5}, agent=False)
    (broken / "agent.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "results.md"
    (out).write_text("# Results\n\nhand-written intro that must survive\n")
    proc = run_script("report.py", "aggregate", "--root", root, "--output", out, "--figures", tmp_path / "fig", "--bootstrap-reps", "200")
    # runs whose agent cannot be evaluated again are named and left out; the others are aggregated
    assert f"{missing}: agent.pt is missing" in proc.stderr and f"{broken}: agent.pt is unreadable" in proc.stderr
    text = out.read_text()
    # IQM over 4 seeds is the mean of the middle two: natural 1000..4000 -> 2500, mad 100/400/900/2000 -> 650
    row = cells(text, "barpo_k1")
    assert row[:2] == ["barpo_k1", "4"] and row[3:5] == ["2490", "650"]
    for cell, point, low, high in ((row[2], 2500, 1000, 4000), (row[5], 650, 100, 2000)):
        p, lo, hi = interval(cell)
        assert p == point and low <= lo < p < hi <= high  # a real interval, inside the range of the seeds
    assert cells(text, "spo") == ["spo", "1", "3000 [3000, 3000]", "2500", "300", "300 [300, 300]", "random, mad", "-90%"]
    assert text.index("| spo |") < text.index("| barpo_k1 |")  # algorithms in the canonical order
    p, lo, hi = interval(next(l for l in text.splitlines() if l.startswith("| spo | 0.")).split(" | ")[1].rstrip(" |"))
    assert p == 0.75 and 0 <= lo <= p <= hi <= 1  # 3 of BARPO's 4 worst cases beat SPO's 300
    assert "hand-written intro that must survive" in text
    assert "| BARPO (κ = 1): natural / worst case | 2500 / 650 | 3684 / 1340 |" in text  # paper beside ours
    assert "| BARPO w/o guidance (κ = 0) vs ARPO: natural | – | +75% |" in text  # neither was run here
    assert (tmp_path / "fig" / "results_sweep_worst_case_profiles.png").stat().st_size > 10_000
    assert "How far the worst case falls" not in text  # no learned attack evaluated yet
    # with ARPO and BARPO w/o guidance: relative IQMs, natural 3000 vs 2000 = +50%, worst 300 vs 600 = -50%
    for seed, (nat, mad) in enumerate([(1000, 500), (3000, 700)], 1):
        write_eval(root, "Hopper-v5", "arpo", seed, nat, {"mad": mad})
    write_eval(root, "Hopper-v5", "barpo_k0", 1, 3000, {"mad": 300})
    # learned attacks on Walker2d: worst case without them 1000 / 600 (IQM 800), with them 500 / 200 (IQM 350)
    write_eval(root, "Walker2d-v5", "spo", 1, 3000, {"mad": 1000, "random": 2000, "sarl": 500, "paad": 800})
    write_eval(root, "Walker2d-v5", "spo", 2, 2000, {"mad": 600, "random": 1500, "sarl": 700, "paad": 200})
    # HalfCheetah returns can be negative: a ratio to ARPO's -5 would read +24260 %, so the difference is given instead
    write_eval(root, "HalfCheetah-v5", "arpo", 1, -5, {"mad": -5})
    write_eval(root, "HalfCheetah-v5", "barpo_k0", 1, 1208, {"mad": 800})
    aggregate(root, out, tmp_path / "fig")
    text = out.read_text()
    assert "| spo | 2 | 800 | 350 | -56% |" in text
    assert cells(text.split("### Walker2d-v5")[1], "spo")[:7] == ["spo", "2", cells(text.split("### Walker2d-v5")[1], "spo")[2],
                                                                  "1750", "800", "600", "500"]  # random, mad, sarl, paad IQMs
    assert text.count("<!-- begin") == 1  # re-running replaces its section
    assert "hand-written intro that must survive" in text
    assert "| BARPO w/o guidance (κ = 0) vs ARPO: natural | +50% | +75% |" in text
    assert "| BARPO w/o guidance (κ = 0) vs ARPO: worst case | -50% | +4% |" in text
    cheetah = text.split("### HalfCheetah-v5")[1].split("### Hopper-v5")[0]
    assert "| BARPO w/o guidance (κ = 0) vs ARPO: natural | +1213 in return (base -5 ≤ 0) | +156% |" in cheetah
    assert cells(cheetah, "arpo")[-1] == "–"  # no robustness ratio for a natural return at or below 0
    assert cells(cheetah, "barpo_k0")[-1] == "-34%"  # (800 - 1208) / 1208


def test_percent_change_gives_a_difference_where_a_ratio_means_nothing():
    from report import percent_change

    assert percent_change(3000, 2000) == "+50%" and percent_change(300, 600) == "-50%"
    assert percent_change(1208, -5) == "+1213 in return (base -5 ≤ 0)"
    assert percent_change(975, 3) == "+972 in return (base 3, near 0)"  # a ratio would read +32400 %
    assert percent_change(1100, 100) == "+1000%"  # ten times the base is still a ratio


def test_write_section_replaces_only_its_own_markers(tmp_path):
    from report import write_section

    path = tmp_path / "doc.md"
    write_section(str(path), "a", "first", new_file_head="# Title\n")
    assert path.read_text() == "# Title\n\n<!-- begin a -->\nfirst\n<!-- end a -->\n"
    path.write_text(path.read_text() + "\nprose between\n")
    write_section(str(path), "b", "other")
    write_section(str(path), "a", "second")
    text = path.read_text()
    assert "first" not in text and text.index("second") < text.index("prose between") < text.index("other")
    path.write_text(text + "\n<!-- begin a -->\nstale copy\n<!-- end a -->\n")  # markers twice: refuse, touch nothing
    before = path.read_text()
    with pytest.raises(SystemExit, match="once each"):
        write_section(str(path), "a", "third")
    assert path.read_text() == before


def test_paper_claims_and_kappa_study_are_decided_by_the_intervals(tmp_path):
    root = tmp_path / "sweep"
    for seed in (1, 2, 3):
        write_eval(root, "Hopper-v5", "barpo_k1", seed, 3000, {"mad": 1000 + 100 * seed})
        write_eval(root, "Hopper-v5", "sappo", seed, 3000, {"mad": 500 + 10 * seed})  # every seed below BARPO's; IQM 1200 vs 520
        write_eval(root, "Hopper-v5", "arpo", seed, 1000 * seed, {"mad": 600 * seed})
        write_eval(root, "Hopper-v5", "barpo_k0", seed, 1000 * seed + 500, {"mad": 600 * seed + 50})  # interleaved with ARPO
        write_eval(root, "Hopper-v5", "barpo_k0.5", seed, 2000, {"mad": 900})
    write_eval(root, "Hopper-v5", "arpo_k1", 1, 3000, {"mad": 200})  # one seed: decides nothing
    out = tmp_path / "results.md"

    def claim(text, start):
        return next(l for l in text.splitlines() if l.startswith(f"| {start}")).strip("| ").split(" | ")

    aggregate(root, out, tmp_path / "fig")
    text = out.read_text()
    row = claim(text, "BARPO has the best worst case of all baselines (sappo)")
    assert row[2:] == ["+4% over wocar", "+131% over sappo (our best)", "mad", "1.00 [1.00, 1.00]", "holds"]
    assert claim(text, "BARPO w/o guidance beats ARPO, natural")[-1] == "cannot tell"  # 3 vs 3, interleaved
    assert claim(text, "BARPO beats ARPO, both guided")[-1] == "cannot tell (seeds 3 vs 1)"
    # a baseline whose every seed beats BARPO reverses the claim
    for seed in (1, 2, 3):
        write_eval(root, "Hopper-v5", "radial", seed, 3000, {"mad": 5000 + seed})
    aggregate(root, out, tmp_path / "fig")
    text = out.read_text()
    row = claim(text, "BARPO has the best worst case of all baselines (sappo, radial)")
    assert row[3].endswith("over radial (our best)") and row[-1] == "does not hold"
    # a learned attack on BARPO's runs only: the comparison stays over the attacks both sides faced
    for seed in (1, 2, 3):
        report = root / "Hopper-v5" / "barpo_k1" / f"s{seed}" / "eval.json"
        data = json.loads(report.read_text())
        data["results"]["paad"] = {"mean": 10.0}
        report.write_text(json.dumps(data))
    aggregate(root, out, tmp_path / "fig")
    text = out.read_text()
    assert claim(text, "BARPO has the best worst case of all baselines (sappo, radial)")[4] == "mad"
    assert claim(text, "BARPO beats ARPO, both guided")[4] == "mad"
    assert "| sappo | 1.00 [1.00, 1.00] | mad |" in text  # and so do the per-task probabilities
    # three guidance weights: the kappa table and its figure
    kappa = text.split("### Hopper-v5: BARPO's guidance weight κ")[1]
    assert "| 0 | 3 |" in kappa and "| 0.5 | 3 | 2000 [2000, 2000] | 900 [900, 900] |" in kappa and "| 1 | 3 |" in kappa
    assert (tmp_path / "fig" / "results_sweep_Hopper-v5_kappa.png").stat().st_size > 10_000
    # the main table's worst case: over the attacks every run of the algorithm faced, named in column 'over'
    main_row = claim(text, "barpo_k1 | 3 |")
    assert main_row[-3:-1] == ["10 [10, 10]", "mad, paad"]
    report = root / "Hopper-v5" / "sappo" / "s1" / "eval.json"
    data = json.loads(report.read_text())
    data["results"]["paad"] = {"mean": 1.0}  # one seed attacked by PA-AD: the row stays over MAD alone
    report.write_text(json.dumps(data))
    # a baseline every seed of which beats BARPO decides the verdict though another one has the higher IQM
    shutil.rmtree(root / "Hopper-v5" / "radial")
    for seed, mad in zip((1, 2, 3), (5000, 5001, 500)):  # interleaved with BARPO's seeds: cannot tell
        write_eval(root, "Hopper-v5", "radial", seed, 6000, {"mad": mad})
    for seed in (1, 2, 3):
        write_eval(root, "Hopper-v5", "wocar", seed, 3000, {"mad": 1400 + 50 * seed})
    aggregate(root, out, tmp_path / "fig")
    text = out.read_text()
    assert claim(text, "sappo | 3 |")[-2] == "mad"
    row = claim(text, "BARPO has the best worst case of all baselines (sappo, radial, wocar)")
    assert row[3].endswith("over wocar (decides; our best: radial)") and row[-1] == "does not hold"


def test_natural_only_runs_neither_crash_nor_hide_a_comparison(tmp_path):
    root = tmp_path / "sweep"
    for seed in (1, 2, 3):
        for algo in ("barpo_k0", "barpo_k0.5", "barpo_k1"):
            write_eval(root, "Hopper-v5", algo, seed, 1000 * seed, {})  # evaluated without any attack
        write_eval(root, "Hopper-v5", "sappo", seed, 900, {"mad": 100})
    write_eval(root, "Hopper-v5", "sappo", 4, 900, {})  # one more, natural only: not part of the worst case
    out = tmp_path / "results.md"
    aggregate(root, out, tmp_path / "fig")
    text = out.read_text()
    row = next(l for l in text.splitlines() if l.startswith("| BARPO has the best worst case")).strip("| ").split(" | ")
    assert row[-1] == "no attack in common"
    kappa = text.split("### Hopper-v5: BARPO's guidance weight κ")[1].split("###")[0]
    row = next(l for l in kappa.splitlines() if l.startswith("| 0.5 |")).strip("| ").split(" | ")
    assert "Worst case over: none in common." in kappa and row[:2] == ["0.5", "3"] and row[2].startswith("2000 [") and row[3] == "–"


def test_report_and_the_sweep_runner_are_separate_tools(tmp_path):
    """Each has its own CLI; the runner loads none of the reporting (report.py, rliable, matplotlib) when imported,
    and the old `benchmark.py aggregate` says where it went."""
    run_script("report.py", "--help")
    run_script("report.py", "aggregate", "--help")
    run_script("benchmark.py", "run", "--help")
    probe = "import sys, benchmark; print(sorted(m for m in ('report', 'rliable', 'matplotlib') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert loaded.strip() == "[]"
    old = refused("benchmark.py", "aggregate", "--root", tmp_path, "--bootstrap-reps", "200")
    assert_one_line_error(old, f"python report.py aggregate --root {tmp_path} --bootstrap-reps 200")


def test_bootstrap_intervals_repeat_whatever_numpys_global_state_and_leave_it_alone():
    """rliable 1.2 resamples from numpy's global generator despite its random_state: without report.seeded_rliable
    two aggregates of the same runs gave different intervals (and a claim near 0.5 could flip)."""
    import numpy as np

    import report

    values, others = {"a": [1.0, 5.0, 3.0, 8.0, 2.0], "b": [2.0, 4.0, 9.0]}, {"b": [1.0, 2.0, 3.0], "c": [5.0, 6.0, 7.0, 8.0]}
    results = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        before = np.random.get_state()[1].copy()
        results.append((report.iqm_ci(values, 500), report.probability_of_improvement([3.0, 5.0, 6.0, 2.0], others, 500)))
        assert (np.random.get_state()[1] == before).all()  # the caller's global state is put back
    assert results[0] == results[1]
    assert results[0][0]["a"][1] < results[0][0]["a"][0] < results[0][0]["a"][2]  # a real interval, not a point


def test_diagnostics_plots_every_run_and_refuses_what_it_cannot_read(tmp_path, capsys):
    import report

    def write(algo, seed, spread, header="step,epsilon,action_spread,input_sensitivity", rows=30):
        d = tmp_path / "paper" / "HalfCheetah-v5" / algo / f"s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        eps = header.startswith("step,epsilon")
        lines = [f"{2048 * (i + 1)}," + (f"{0.15 * i / 30:g}," if eps else "") + f"{spread},0.5" for i in range(rows)]
        (d / "diagnostics.csv").write_text("\n".join([header, *lines]) + "\n")
        return d / "diagnostics.csv"

    write("barpo_k1", 1, 0.7), write("barpo_k1", 2, 0.8), write("sappo", 1, 0.01)
    write("spo", 1, 0.6, header="step,action_spread,input_sensitivity")  # SPO logs no epsilon: plotted without it
    (tmp_path / "paper" / "HalfCheetah-v5" / "wocar" / "s1").mkdir(parents=True)  # no diagnostics.csv: not a line
    png = tmp_path / "fig.png"
    report.diagnostics(report.Diagnostics(root=str(tmp_path / "paper"), output=str(png)))
    assert capsys.readouterr().out.splitlines()[0] == "4 runs: barpo_k1/s1, barpo_k1/s2, sappo/s1, spo/s1"
    assert png.stat().st_size > 20_000
    empty = write("radial", 1, 0.3, rows=0)  # header only: left out by name, not counted
    report.diagnostics(report.Diagnostics(root=str(tmp_path / "paper"), algos=["sappo", "radial"], output=str(png)))
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == "1 runs: sappo/s1" and f"left out radial/s1: {empty} has no rows" in out.err
    # nothing to plot, files that are not diagnostics.csv, an output it cannot write: one line, no figure over the old one
    before = png.read_bytes()
    for algos, fragment in ((["wocar"], "no diagnostics.csv with rows under"), (["radial"], "no diagnostics.csv with rows")):
        assert_one_line_error(refused("report.py", "diagnostics", "--root", tmp_path / "paper", "--algos", *algos,
                                      "--output", png), fragment)
    for text, fragment in (("step,epsilon\n1,2\n", "no column action_spread, input_sensitivity"),
                           ("step,action_spread,input_sensitivity\n2048,nan,0.5\n", "not a finite number"),
                           ("step,action_spread,input_sensitivity\n2048,0.5\n4096,0.5,0.5\n", "cannot be plotted"),
                           ("", "the file is empty")):
        empty.write_text(text)
        assert_one_line_error(refused("report.py", "diagnostics", "--root", tmp_path / "paper", "--output", png), fragment)
    assert png.read_bytes() == before
    empty.unlink()
    assert_one_line_error(refused("report.py", "diagnostics", "--root", tmp_path / "paper", "--output", tmp_path / "x.txt"),
                          "name a .png, .pdf or .svg file")
    (tmp_path / "file").write_text("")
    assert_one_line_error(refused("report.py", "diagnostics", "--root", tmp_path / "paper", "--output",
                                  tmp_path / "file" / "fig.png"), "cannot write")
