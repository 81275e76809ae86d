"""A student changes the network in one training script: training, evaluation and both learned attacks must use
the changed network, and a checkpoint whose script no longer builds its network is refused in one line."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, assert_one_line_error, refused, run_script

ACTOR = """            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, act_dim), std=0.01),"""
pytestmark = pytest.mark.xdist_group("relu_barpo")  # both tests read the module's one trained checkpoint


@pytest.fixture(scope="module")
def relu_barpo(tmp_path_factory):
    """barpo_ppo.py copied out of the repository with ReLU for Tanh and a third hidden layer in the actor, trained
    for 128 steps; returns its checkpoint."""
    where = tmp_path_factory.mktemp("student")
    source = (Path(REPO) / "barpo_ppo.py").read_text()
    assert source.count(ACTOR) == 1
    source = source.replace(ACTOR, ACTOR.replace("            layer_init(nn.Linear(hidden_size, act_dim)",
                                                 "            layer_init(nn.Linear(hidden_size, hidden_size)),\n            nn.Tanh(),\n"
                                                 "            layer_init(nn.Linear(hidden_size, act_dim)"))
    (where / "relu_barpo_ppo.py").write_text(source.replace("nn.Tanh()", "nn.ReLU()"))
    shutil.copy(Path(REPO) / "attacks.py", where / "attacks.py")
    run_script(where / "relu_barpo_ppo.py", *TINY, "--run-dir", where / "run")
    return where / "run" / "agent.pt"


def test_training_evaluation_and_learned_attacks_use_the_changed_network(relu_barpo, tmp_path):
    import evaluate

    ckpt = torch.load(relu_barpo, weights_only=True)
    assert ckpt["script"] == "relu_barpo_ppo.py" and "ReLU" in ckpt["network"] and "Tanh" not in ckpt["network"]
    assert "actor_mean.6.weight" in ckpt["agent"]  # trained with the extra layer
    agent, _ = evaluate.load_checkpoint(str(relu_barpo))
    assert repr(agent) == ckpt["network"] and isinstance(agent.actor_mean[1], torch.nn.ReLU)
    out = tmp_path / "eval.json"
    run_script("evaluate.py", relu_barpo, "--attacks", "random,critic,mad", "--num-episodes", "2", "--output", out)
    assert json.loads(out.read_text())["algo"] == "barpo"
    for name in ("sarl", "paad"):
        run_script("learned_attack.py", name, relu_barpo, *TINY, "--num-envs", "2", "--run-dir", tmp_path / name)
    run_script("evaluate.py", relu_barpo, "--attacks", "sarl,paad", "--num-episodes", "2", "--output", tmp_path / "learned.json")
    assert {"sarl", "paad"} <= set(json.loads((tmp_path / "learned.json").read_text())["results"])


def test_a_checkpoint_its_script_no_longer_builds_is_refused(relu_barpo, tmp_path):
    ckpt = torch.load(relu_barpo, weights_only=True)
    changed = dict(ckpt, network=ckpt["network"].replace("ReLU", "Tanh"))  # as if the script had changed since
    torch.save(changed, tmp_path / "changed.pt")
    proc = refused("evaluate.py", tmp_path / "changed.pt", "--num-episodes", "1", "--output", tmp_path / "e.json")
    assert_one_line_error(proc, "another network")
    gone = dict(ckpt, script="gone_ppo.py", script_path=str(tmp_path / "gone_ppo.py"))
    torch.save(gone, tmp_path / "gone.pt")
    proc = refused("evaluate.py", tmp_path / "gone.pt", "--num-episodes", "1", "--output", tmp_path / "e.json")
    assert_one_line_error(proc, "gone_ppo.py")
    assert not (tmp_path / "e.json").exists()
