"""The imitation side of ``scripts/compare_imitation.py``: one PreferenceComparisons run.

Runs in imitation's own virtualenv (imitation 1.0.1: gymnasium 0.29, Stable-Baselines3 2.2.1,
numpy < 2), which ``compare_imitation.py`` creates; it imports from prefrl (the repository root
is put on ``sys.path``) only what both sides must share exactly: the fixed-length episode
wrapper (``prefrl.control.envs.FixedLengthWrapper``), the agent checkpoint
(``prefrl.control.agent.save_agent``, so prefrl's evaluator loads the imitation agent) and the
run-directory names (``prefrl.core.rundir.RunDir``).

    VENV/bin/python scripts/imitation_runner.py CONFIG.json

CONFIG.json: ``{"out": run directory, "seed": int, "setting": compare_imitation.Setting as a dict}``.
Writes ``OUT/agent.pt`` and ``OUT/summary.json`` (training only: true return of the last
training episodes, labels, wall time) and prints the summary as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(config: Path) -> dict:
    t_proc = time.perf_counter()
    cfg = json.loads(config.read_text())
    s, seed = cfg["setting"], int(cfg["seed"])

    import gymnasium as gym
    import imitation
    import numpy as np
    import torch
    from imitation.algorithms import preference_comparisons as pc
    from imitation.data.wrappers import RolloutInfoWrapper
    from imitation.rewards.reward_nets import AddSTDRewardWrapper, BasicRewardNet, RewardEnsemble
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from prefrl.control.agent import save_agent
    from prefrl.control.envs import FixedLengthWrapper
    from prefrl.core.rundir import RunDir

    torch.set_num_threads(1)
    rd = RunDir(cfg["out"])
    rd.mkdir()

    def make_env():
        env = gym.make(s["env_id"], max_episode_steps=s["max_episode_steps"])
        env = FixedLengthWrapper(env, s["termination_penalty"], s["max_episode_steps"])
        env = Monitor(env)
        env = RolloutInfoWrapper(env)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    venv = DummyVecEnv([make_env])
    agent = PPO("MlpPolicy", venv, n_steps=s["n_steps"], batch_size=s["batch_size"], n_epochs=s["n_epochs"],
                learning_rate=s["learning_rate"], gamma=s["gamma"], gae_lambda=s["gae_lambda"],
                clip_range=s["clip_range"], policy_kwargs={"net_arch": list(s["net_arch"]), "log_std_init": 0.0},
                seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    members = [BasicRewardNet(venv.observation_space, venv.action_space, hid_sizes=tuple(s["reward_hidden"]))
               for _ in range(s["members"])]
    reward_net = AddSTDRewardWrapper(RewardEnsemble(venv.observation_space, venv.action_space, members),
                                     default_alpha=0.0)
    pref_model = pc.PreferenceModel(reward_net, noise_prob=s["noise_eps"])
    trainer = pc.EnsembleTrainer(pref_model, pc.CrossEntropyRewardLoss(), rng=rng, batch_size=s["reward_batch"],
                                 epochs=s["reward_epochs"], lr=s["reward_lr"])
    fragmenter = pc.ActiveSelectionFragmenter(pref_model, pc.RandomFragmenter(rng=rng, warning_threshold=0),
                                              fragment_sample_factor=s["pool_factor"], uncertainty_on="logit")
    gatherer = pc.SyntheticGatherer(temperature=0, rng=rng)
    gen = pc.AgentTrainer(agent, reward_net, venv, rng=rng, exploration_frac=0.0)
    # VecNormalize (observations and reward) over the learned reward, as in prefrl.
    norm = VecNormalize(gen.venv, norm_obs=True, norm_reward=True, gamma=s["gamma"])
    agent.set_env(norm)
    algo = pc.PreferenceComparisons(
        gen, reward_net, num_iterations=s["iterations"], fragmenter=fragmenter, preference_gatherer=gatherer,
        reward_trainer=trainer, fragment_length=s["clip_length"], transition_oversampling=1,
        initial_comparison_frac=s["initial_fraction"],
        initial_epoch_multiplier=s["initial_epochs"] / s["reward_epochs"], query_schedule="hyperbolic",
    )
    # PreferenceComparisons.train trains the agent num_iterations + 1 times (once after the initial
    # comparisons too), total_timesteps // num_iterations steps each: ask for the share that makes the
    # agent's steps equal prefrl's.
    per_iteration = s["steps"] // (s["iterations"] + 1)
    metrics = algo.train(total_timesteps=per_iteration * s["iterations"], total_comparisons=s["labels"])
    wall = time.perf_counter() - t0

    ep_true = [ep["r"] for ep in agent.ep_info_buffer]  # Monitor beneath the learned reward: true returns
    save_agent(rd.agent, agent, norm, wall)
    summary = {"library": "imitation " + imitation.__version__, "seed": seed, "timesteps": int(agent.num_timesteps),
               "labels": len(algo.dataset), "true_return_mean": float(np.mean(ep_true)) if ep_true else None,
               "wall_s": round(wall, 2), "process_s": round(time.perf_counter() - t_proc, 2),
               "reward_accuracy": metrics.get("reward_accuracy")}
    rd.write_summary(summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    print(json.dumps(main(Path(sys.argv[1]))))
