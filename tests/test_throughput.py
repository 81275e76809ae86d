"""Speed-ups must not change a seeded run. Every training script is run twice with the same flags and seed: as it
is now and as it was at REFERENCE (written by `git show` into a temporary directory with that commit's attacks.py);
every TensorBoard scalar (but the timing) and every tensor of the checkpoint (weights, Adam state, normaliser
statistics) must be equal bit for bit. A change that is meant to change the numbers moves REFERENCE to itself."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import REPO, read_scalars

REFERENCE = "9906ed2"  # the last commit before the throughput work
SCRIPTS = ["spo_ppo.py", "arpo_ppo.py", "barpo_ppo.py", "sappo_ppo.py", "radial_ppo.py", "wocar_ppo.py"]
SHORT = ["--total-timesteps", "512", "--num-steps", "128", "--num-minibatches", "8", "--update-epochs", "2", "--seed", "3"]
RUNS = {  # name: (script, flags); Hopper's random-policy episodes end every few dozen steps, HalfCheetah's are truncated at 1000
    **{script[: -len(".py")]: (script, SHORT) for script in SCRIPTS},
    "spo_two_envs_value_first": ("spo_ppo.py", SHORT + ["--num-envs", "2", "--value-first"]),
    "spo_halfcheetah": ("spo_ppo.py", ["--env-id", "HalfCheetah-v5", "--total-timesteps", "1024", "--num-steps", "512",
                                       "--num-minibatches", "8", "--update-epochs", "2", "--seed", "4"]),
}


def run(code_dir, script, flags, run_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(code_dir, script), *flags, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, cwd=code_dir, env=env, timeout=600)
    assert proc.returncode == 0, f"{code_dir}/{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def assert_same(reference, current, where):
    """Equal bit for bit: tensors in value and dtype, containers recursively, everything else by ==."""
    if isinstance(reference, torch.Tensor):
        assert isinstance(current, torch.Tensor) and reference.dtype == current.dtype and torch.equal(reference, current), where
    elif isinstance(reference, dict):
        missing = set(reference) - set(current)
        assert not missing, f"{where}: missing {missing}"
        for key in reference:
            assert_same(reference[key], current[key], f"{where}.{key}")
    elif isinstance(reference, (list, tuple)):
        assert len(reference) == len(current), where
        for i, (a, b) in enumerate(zip(reference, current)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert reference == current, f"{where}: {reference!r} != {current!r}"


@pytest.fixture(scope="module")
def reference_code(tmp_path_factory):
    code_dir = tmp_path_factory.mktemp("reference_code")
    for name in SCRIPTS + ["attacks.py"]:
        proc = subprocess.run(["git", "show", f"{REFERENCE}:{name}"], capture_output=True, cwd=REPO)
        if proc.returncode != 0:
            pytest.skip(f"no git history with commit {REFERENCE} here: {proc.stderr.decode().strip()}")
        (code_dir / name).write_bytes(proc.stdout)
    return code_dir


@pytest.fixture(scope="module")
def paired_runs(reference_code, tmp_path_factory):
    """Every run of RUNS with the reference code and with the current code, two processes at a time."""
    out = tmp_path_factory.mktemp("paired_runs")
    jobs = [(code, script, flags, out / f"{name}_{label}") for name, (script, flags) in RUNS.items()
            for label, code in (("reference", reference_code), ("current", REPO))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: run(*job), jobs))
    return out


@pytest.mark.xdist_group("paired_runs")  # one worker builds the 16 runs, not each
@pytest.mark.parametrize("name", list(RUNS))
def test_seeded_run_is_bit_identical_to_the_reference_code(name, paired_runs):
    reference, current = paired_runs / f"{name}_reference", paired_runs / f"{name}_current"
    ref_scalars, cur_scalars = read_scalars(str(reference)), read_scalars(str(current))
    assert ref_scalars["charts/episodic_return"] and len(ref_scalars["losses/policy_loss"]) >= 2  # the run crossed an episode end
    for tag, values in ref_scalars.items():
        if tag != "charts/SPS":
            assert cur_scalars.get(tag) == values, tag
    ref_ckpt = torch.load(reference / "agent.pt", weights_only=True)
    cur_ckpt = torch.load(current / "agent.pt", weights_only=True)
    for key in ("args", "versions"):  # the run directory differs, flags added later may be new keys
        ref_args, cur_args = ref_ckpt.pop(key), cur_ckpt.pop(key)
    assert all(cur_args[k] == v for k, v in ref_args.items() if k != "run_dir")
    assert_same(ref_ckpt, cur_ckpt, name)


def gymnasium_stack(env_id, gamma=0.99):
    """make_env's wrapper stack with gymnasium's own normalisers (the code of REFERENCE)."""
    env = gym.make(env_id)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = gym.wrappers.ClipAction(env)
    env = gym.wrappers.NormalizeObservation(env)
    env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
    env = gym.wrappers.NormalizeReward(env, gamma=gamma)
    return gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))


def normalisers(env):
    """The NormalizeReward and NormalizeObservation wrappers of a wrapper stack, outermost first."""
    found = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, (gym.wrappers.NormalizeObservation, gym.wrappers.NormalizeReward)):
            found.append(env)
        env = env.env
    return found


def assert_identical(a, b, where):
    assert type(a) is type(b) and np.asarray(a).dtype == np.asarray(b).dtype, f"{where}: {type(a)} {type(b)}"
    assert np.array_equal(a, b), where


@pytest.mark.parametrize("env_id,steps", [("Hopper-v5", 3000), ("HalfCheetah-v5", 2100)])
def test_fast_normalisers_equal_gymnasiums_step_by_step(env_id, steps):
    """The training scripts' NormalizeObservation / NormalizeReward against gymnasium's: the same observations,
    rewards and running statistics (values and dtypes) at every step, across terminations and truncations, and
    with the statistics frozen (update_running_mean = False, as evaluation runs them)."""
    from spo_ppo import make_env

    ours, theirs = make_env(env_id, 0.99)(), gymnasium_stack(env_id)
    assert [type(w).__module__ for w in normalisers(ours)] == ["spo_ppo"] * 2  # ours, not gymnasium's, are under test
    assert_identical(ours.reset(seed=5)[0], theirs.reset(seed=5)[0], "reset")
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(steps):
        if t == steps - 100:
            for env in (ours, theirs):
                for wrapper in normalisers(env):
                    wrapper.update_running_mean = False
        action = rng.normal(size=ours.action_space.shape) * 1.5  # beyond the bounds now and then: ClipAction acts
        a, b = ours.step(action), theirs.step(action)
        for i, name in enumerate(["obs", "reward", "terminated", "truncated"]):
            assert_identical(a[i], b[i], f"step {t} {name}")
        for name in ("obs_rms", "return_rms"):
            x, y = ours.get_wrapper_attr(name), theirs.get_wrapper_attr(name)
            assert_identical(x.mean, y.mean, f"step {t} {name}.mean")
            assert_identical(x.var, y.var, f"step {t} {name}.var")
            assert x.count == y.count, f"step {t} {name}.count"
        if a[2] or a[3]:
            ends += 1
            assert a[4]["episode"]["r"] == b[4]["episode"]["r"]
            assert_identical(ours.reset()[0], theirs.reset()[0], f"reset after step {t}")
    assert ends >= 2


def test_throughput_profile_times_every_part_of_both_versions():
    """`throughput.py --profile` loads the reference code from git and times each part of a step for it and for the current code."""
    import shutil

    import throughput
    import spo_ppo

    try:
        code_dir, reference = throughput.reference_code(REFERENCE)
    except SystemExit as e:
        pytest.skip(str(e))
    try:
        assert sorted(os.listdir(code_dir)) == sorted(SCRIPTS + ["attacks.py"])
        for code, before in ((reference, True), (spo_ppo, False)):
            parts = throughput.profile_parts(code, "Hopper-v5", 64, before)
            assert len(parts) == 10 and all(np.isfinite(v) and v > 0 for v in parts.values()), parts
    finally:
        shutil.rmtree(code_dir)


def test_throughput_learned_times_every_part_of_both_versions(tiny_spo_checkpoint):
    """`throughput.py --learned` imports learned_attack.py of --against's commit with that commit's attacks, evaluate and
    spo_ppo (not the current ones) and times each part of a step of both versions."""
    import shutil

    import throughput
    import evaluate

    try:
        code_dir, _ = throughput.reference_code(throughput.LEARNED_REFERENCE, throughput.python_files(throughput.LEARNED_REFERENCE))
    except SystemExit as e:
        pytest.skip(str(e))
    try:
        victim, ckpt = evaluate.load_checkpoint(str(tiny_spo_checkpoint))
        for directory, before in ((str(code_dir), True), (REPO, False)):
            code, spo = throughput.import_learned(directory)
            assert all(os.path.dirname(m.__file__) == directory for m in (code, code.attacks, code.evaluate, spo))
            for attack in ("sarl", "paad"):
                parts = throughput.learned_parts(code, spo, attack, victim, ckpt, 512, before)
                assert len(parts) == 8 and all(np.isfinite(v) and v > 0 for v in parts.values()), parts
        assert sys.modules["evaluate"] is evaluate  # this process's modules are back in place
    finally:
        shutil.rmtree(code_dir)
