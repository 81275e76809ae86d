"""The committed runs under results/ (and a fixture of the same layout) work on a fresh checkout, with nothing trained."""
import glob
import json
import os

import torch

import benchmark
import evaluate
from conftest import REPO, run_script

FIXTURE = os.path.join(REPO, "tests", "fixtures", "results", "quick", "Hopper-v5", "spo", "s1")


def test_committed_agent_evaluates_with_its_committed_learned_adversaries(tmp_path):
    """The fixture is a run as benchmark.py exports it (a 128-step SPO agent, with 128-step SA-RL and PA-AD
    adversaries trained against exactly that file): evaluate.py uses them as they are and trains nothing."""
    before = sorted(os.listdir(FIXTURE))
    out = tmp_path / "eval.json"
    run_script("evaluate.py", os.path.join(FIXTURE, "agent.pt"), "--attacks", "random,sarl,paad",
                      "--num-episodes", "2", "--output", out)
    report = json.loads(out.read_text())
    assert {"natural", "random", "sarl", "paad"} <= set(report["results"])  # without --train-learned: the committed ones
    for name in ("sarl", "paad"):
        assert report["learned_adversaries"][name]
    assert sorted(os.listdir(FIXTURE)) == before  # nothing written next to the committed run


def test_every_committed_run_can_be_evaluated_again():
    """Each results/<preset>/<env>/<algo>/s<seed>/ has a loadable agent without optimiser state, the commit of the
    code that trained it, and learned adversaries bound to that very file (evaluate.py checks the sha1)."""
    runs = sorted(glob.glob(os.path.join(REPO, "results", "*", "*", "*", "s*"))) + [FIXTURE]
    for run in runs:
        assert benchmark.agent_problem(run) is None, run
        ckpt = torch.load(os.path.join(run, "agent.pt"), weights_only=True)
        assert not any("optimizer" in k for k in ckpt) and ckpt["commits"], run
        sha1 = evaluate.file_sha1(os.path.join(run, "agent.pt"))
        for adversary in glob.glob(os.path.join(run, "*_eps*.pt")):
            if os.path.basename(adversary).startswith(("sarl_", "paad_")):
                assert torch.load(adversary, weights_only=True)["victim_sha1"] == sha1, adversary
        assert os.path.getsize(os.path.join(run, "curve.csv")) > 0
        assert sum(os.path.getsize(f) for f in glob.glob(os.path.join(run, "*"))) < 500_000, run  # a run stays small
