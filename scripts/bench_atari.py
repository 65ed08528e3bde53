"""Learned-reward PPO (synthetic oracle) vs true-reward PPO on an Atari preset, side by side.

Runs ``prefrl train --baseline`` (the learned-reward arm, then the true-reward arm with the
same env steps, seed, PPO settings and env stack: only the reward differs; one heavy
process at a time), then scores the final reward model on clips it never saw:

- clips of a uniformly random policy and of the trained learned-reward agent (stochastic
  policy), each 25 steps; Spearman and Pearson correlation between predicted and true clip
  return, and the accuracy on pairs with different true returns;
- side-by-side videos of a few pairs labeled by the synthetic oracle (RGB frames, preferred
  clip framed in green) and a short video of the trained agent, written to ``--videos``.

    python scripts/bench_atari.py --task pong-quick --steps 30000 --labels 300 --seed 0
    python scripts/bench_atari.py --task pong-500k --steps 500000 --labels 1500 --seed 0 --parallel \
        --out bench_out/pong500k   # resumable: run the same command again after a stop

Writes ``OUT/summary.json``, ``OUT/table.md`` and ``OUT/curves.png`` (true return and
reward-model correlation vs env steps). An interrupted benchmark resumes its run: a finished
run is skipped, a started one continues from its last checkpoint (``prefrl train --resume``).

``--overhead`` measures the preference loop's cost instead: the learned-reward arm and the
true-reward arm of the same task, steps and seed run at the same time (two processes, so a
busy machine slows both alike), each timed on its own: wall, user and system CPU seconds and
peak RSS (``wait4``), written to ``OUT/overhead.json`` and ``OUT/overhead.md``::

    python scripts/bench_atari.py --overhead --task pong-quick --steps 16384 --labels 300 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.core.rundir import RunDir, write_json_atomic  # noqa: E402


def _train_cmd(args: argparse.Namespace, run: RunDir, *extra: str) -> list[str]:
    """``prefrl train`` of one run; a started run continues from its checkpoint with its own config."""
    cmd = [sys.executable, "-m", "prefrl.cli", "train", "--steps", str(args.steps), "--run-dir", str(run.path),
           "--eval-episodes", str(args.eval_episodes), "--no-video"]
    if run.config.exists():
        return cmd + ["--resume"] + [e for e in extra if e == "--baseline"]
    return cmd + ["--task", args.task, "--seed", str(args.seed), *extra]


def _learned_flags(args: argparse.Namespace) -> tuple[str, ...]:
    flags = ("--labels", str(args.labels)) + (("--query", args.query) if args.query else ())
    return flags + (("--override", *args.override) if args.override else ())


def _run_dir(args: argparse.Namespace) -> RunDir:
    """OUT/TASK-STEPS-LABELS-sSEED, then -QUERY and each -OVERRIDE when given: the learned arm, its true
    arm in baseline/."""
    name = f"{args.task}-{args.steps}-{args.labels}-s{args.seed}"
    for part in ([args.query] if args.query else []) + list(args.override or []):
        name += "-" + re.sub(r"[^A-Za-z0-9_.]+", "", part.split(".")[-1])
    return RunDir(args.out / name)


def reuse_true_arm(args: argparse.Namespace, rd: RunDir) -> None:
    """Copy the finished true-reward arm of another run of this benchmark (``--reuse-true``) into ``rd``'s
    baseline, so a variant of the learned arm (e.g. ``--query``) is compared to the same true arm without
    training it again. Refused unless that arm ran the same env, PPO, seed and steps."""
    from prefrl.control.config import load_run_config

    src = RunDir(args.reuse_true)
    src = src if (src.path / "config.json").exists() and not src.baseline.summary.exists() else src.baseline
    if not src.summary.exists():
        raise SystemExit(f"--reuse-true {args.reuse_true}: no finished true-reward arm there (no {src.summary})")
    cfg = load_run_config(src.path)
    want = load_run_config(rd.path).task if rd.config.exists() else None
    from prefrl.control.tasks import load_task

    from prefrl.control.commands import parse_overrides

    task = want or load_task(args.task).with_overrides(parse_overrides(args.override or []))
    same = {"reward": cfg.reward == "true", "seed": cfg.seed == args.seed, "steps": cfg.steps == args.steps,
            "env": cfg.task.env == task.env, "ppo": cfg.task.ppo == task.ppo}
    if not all(same.values()):
        raise SystemExit(f"--reuse-true {src.path}: not the same true-reward arm (differs in "
                         f"{', '.join(k for k, ok in same.items() if not ok)})")
    if not rd.baseline.summary.exists():
        import shutil

        if rd.baseline.path.exists():
            shutil.rmtree(rd.baseline.path)
        shutil.copytree(src.path, rd.baseline.path)
        print(f"true-reward arm reused from {src.path}", flush=True)


def train_parallel(args: argparse.Namespace, rd: RunDir) -> None:
    """Both arms at once (two processes, one per core), each resumed where it stopped; finished ones skipped."""
    procs = []
    for run, extra in ((rd, _learned_flags(args)), (rd.baseline, ("--reward", "true"))):
        if run.summary.exists():
            continue
        cmd = _train_cmd(args, run, *extra)
        print(" ".join(cmd), flush=True)
        run.path.parent.mkdir(parents=True, exist_ok=True)
        log = open(rd.path.parent / f"{rd.path.name}{'' if run is rd else '.baseline'}.log", "a")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log))
    for proc, log in procs:
        if proc.wait() != 0:
            raise SystemExit(f"training failed: see {log.name}")
        log.close()


def join_arms(rd: RunDir) -> dict:
    """The learned arm's summary with the true arm's and their ratios (as ``prefrl train --baseline``
    writes them), and both curves in one plot."""
    from prefrl.control.train import add_ratios
    from prefrl.viz import plot_run

    summary = rd.read_summary()
    summary["baseline"] = rd.baseline.read_summary()
    add_ratios(summary)  # None on Pong's negative scores: the gain over a random policy is the figure there
    rd.write_summary(summary)
    plot_run(rd.path)
    return summary


def train(args: argparse.Namespace, rd: RunDir) -> dict:
    if rd.summary.exists() and rd.baseline.summary.exists() and "baseline" in rd.read_summary():
        return join_arms(rd)  # both done: joined again (cheap), so the summary follows the current ratio rules
    if args.parallel:
        train_parallel(args, rd)
        return join_arms(rd)
    cmd = _train_cmd(args, rd, *_learned_flags(args), "--baseline")
    print(" ".join(cmd), flush=True)
    with open(rd.path.parent / f"{rd.path.name}.log", "a") as log:
        if subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT) != 0:
            raise SystemExit(f"training failed: see {log.name}")
    return rd.read_summary()


def _overhead_run(args: argparse.Namespace, arm: str) -> Path:
    return args.out / f"overhead-{args.task}-{args.steps}-{arm}-s{args.seed}"


def overhead_quality(args: argparse.Namespace) -> dict:
    """Held-out quality of the learned arm's final reward model (not timed): ``score_held_out``'s rank
    metrics on ``--heldout-clips`` fresh clips of a random policy and of the learned arm's agent."""
    cfg, length, ens, model = _load_run(RunDir(_overhead_run(args, "learned")))
    return score_held_out(args, cfg, ens, model, length)[0]


def overhead(args: argparse.Namespace) -> dict:
    """Both arms at once, each timed by ``wait4``: wall, CPU and peak RSS, and learned / true ratios;
    then (``--heldout-clips`` > 0) the learned arm's reward model scored on held-out clips.
    ``--score-only`` scores the runs already in OUT again (adds the quality to ``overhead.json``)."""
    if args.score_only:
        out = json.loads((args.out / "overhead.json").read_text())
        out["heldout"] = overhead_quality(args)
        _write_overhead(args, out)
        return out
    procs = {}
    for arm in ("learned", "true"):
        run = _overhead_run(args, arm)
        if run.exists():
            import shutil

            shutil.rmtree(run)
        cmd = [sys.executable, "-m", "prefrl.cli", "train", "--task", args.task, "--seed", str(args.seed),
               "--steps", str(args.steps), "--reward", arm, "--run-dir", str(run), "--no-video", "--eval-episodes", "0"]
        if arm == "learned":
            cmd += list(_learned_flags(args))  # --labels, and --query / --override when given
        print(" ".join(cmd), flush=True)
        log = open(args.out / f"{run.name}.log", "w")
        procs[arm] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), time.perf_counter(), log)
    out: dict = {"task": args.task, "steps": args.steps, "labels": args.labels, "seed": args.seed}
    by_pid = {proc.pid: arm for arm, (proc, _, _) in procs.items()}
    while by_pid:  # whichever arm ends first: its wall time is taken when it ends
        pid, status, ru = os.wait4(-1, 0)
        arm = by_pid.pop(pid, None)
        if arm is None:
            continue
        proc, t0, log = procs[arm]
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        log.close()
        if proc.returncode != 0:
            raise SystemExit(f"{arm} arm failed: see {log.name}")
        out[arm] = {"wall_s": round(wall, 1), "user_s": round(ru.ru_utime, 1), "sys_s": round(ru.ru_stime, 1),
                    "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}
    for key in ("wall_s", "cpu_s", "sys_s", "peak_rss_mb"):
        out[f"{key}_ratio"] = round(out["learned"][key] / max(out["true"][key], 1e-9), 2)
    write_json_atomic(args.out / "overhead.json", out)
    if args.heldout_clips > 0:
        out["heldout"] = overhead_quality(args)
    _write_overhead(args, out)
    return out


def _write_overhead(args: argparse.Namespace, out: dict) -> None:
    """``OUT/overhead.json`` and ``OUT/overhead.md`` (the table, and the held-out quality when measured)."""
    write_json_atomic(args.out / "overhead.json", out)
    extra = "".join(f" {f}" for f in _learned_flags(args)[2:])  # --query / --override, as the learned arm ran
    lines = [f"Command: `python scripts/bench_atari.py --overhead --task {args.task} --steps {args.steps} "
             f"--labels {args.labels} --seed {args.seed}{extra}`", "",
             "| arm | wall s | user s | system s | CPU s | peak RSS MB |", "|---|---|---|---|---|---|"]
    for arm in ("learned", "true"):
        a = out[arm]
        lines.append(f"| {arm} reward | {a['wall_s']} | {a['user_s']} | {a['sys_s']} | {a['cpu_s']} | {a['peak_rss_mb']} |")
    lines.append(f"| learned / true | {out['wall_s_ratio']}x | | {out['sys_s_ratio']}x | {out['cpu_s_ratio']}x | "
                 f"{out['peak_rss_mb_ratio']}x |")
    if "heldout" in out:
        lines += ["", "Learned arm's final reward model on held-out clips:", "",
                  "| held-out clips | n | Spearman | Pearson | accuracy on pairs with different returns |",
                  "|---|---|---|---|---|"]
        for name, m in out["heldout"].items():
            lines.append(f"| {name} | {m['clips']} | {_f(m['spearman'])} | {_f(m['pearson'])} | "
                         f"{_f(m['pair_accuracy'])} ({m['strict_pairs']:,} pairs) |")
    (args.out / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def collect_clips(cfg, policy, n_clips: int, length: int, seed: int, keep_frames: bool = False, record: int = 0):
    """``n_clips`` clips of ``length`` steps from ``policy`` (None: uniform random); optionally env 0's frames."""
    from prefrl.control.envs import make_vec_env
    from prefrl.control.reward_wrapper import ClipCollector, LearnedRewardVecEnv

    env_cfg = cfg.task.env
    venv = make_vec_env(env_cfg, seed, render=keep_frames or record > 0)
    collector = ClipCollector(venv.num_envs, length, n_clips, keep_frames=keep_frames)
    wrapper = LearnedRewardVecEnv(venv, None, collector)
    obs = wrapper.reset()
    rng = np.random.default_rng(seed)
    frames = []
    while collector.total_clips < n_clips or len(frames) < record:
        if policy is None:
            acts = rng.integers(0, venv.action_space.n, venv.num_envs)
        else:
            acts, _ = policy.predict(obs, deterministic=False)
        obs, _, _, infos = wrapper.step(acts)
        if len(frames) < record:
            frames.append(infos[0]["frame"])
    wrapper.close()
    return collector.clips(), frames


def random_score(cfg, games: int, seed: int) -> dict:
    """Mean true score of ``games`` games of a uniformly random policy on the task's env stack (the
    zero of the gain columns: the issue's "gain over a random policy")."""
    from prefrl.control.envs import make_vec_env

    venv = make_vec_env(cfg.task.env, seed)
    venv.reset()
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    while len(scores) < games:
        _, _, _, infos = venv.step(rng.integers(0, venv.action_space.n, venv.num_envs))
        scores += [float(i["episode"]["r"]) for i in infos if "episode" in i]
    venv.close()
    scores = scores[:games]
    return {"games": games, "mean": float(np.mean(scores)), "std": float(np.std(scores))}


def step_rewards(ens, clips) -> tuple[np.ndarray, np.ndarray]:
    """(N*T,) the reward model's per-step reward of every step of (N, T) clips, normalised as the agent
    got it (256 steps at a time), and (N*T, *obs_shape) the steps' observations."""
    n, t = clips.true_rew.shape
    inputs = clips.model_inputs()
    fn = ens.step_fn()
    obs = inputs["obs"].reshape(n * t, *inputs["obs"].shape[2:])
    acts = inputs["acts"].reshape(n * t, *inputs["acts"].shape[2:])
    return np.concatenate([fn(obs[s : s + 256], acts[s : s + 256]) for s in range(0, len(obs), 256)]), obs


def event_pricing(ens, clips) -> dict:
    """The final reward model's per-step reward (normalised as the agent got it) at steps where a point
    was lost (true reward < 0), won (> 0) and elsewhere, in units of its per-step std over these clips:
    what the agent was actually paid for each event."""
    r, _ = step_rewards(ens, clips)
    true = clips.true_rew.reshape(-1)
    sd = float(r.std()) or 1.0
    out = {"steps": int(len(r)), "reward_std": sd}
    for name, mask in (("lost", true < 0), ("won", true > 0), ("none", true == 0)):
        out[name] = {"steps": int(mask.sum()), "mean_in_std": float(r[mask].mean() / sd) if mask.any() else None}
    return out


def label_mix(rd: RunDir) -> dict:
    """What the learned arm's judgments compared: its judged clips by true return, and the judgments
    with a clip that lost / won a point (true return < 0 / > 0), over all labels and the up-front ones."""
    from prefrl.control.config import load_run_config
    from prefrl.core.store import PreferenceStore

    with PreferenceStore(rd.path, create=False) as store:
        js = store.judgments()
        ids = sorted({j.left for j in js} | {j.right for j in js})
        ret: dict[int, float] = {}
        for s in range(0, len(ids), 64):  # 64 Atari clips at a time
            ret.update(zip(ids[s : s + 64], store.load_clips(ids[s : s + 64]).true_returns().tolist()))
    initial = load_run_config(rd.path).task.prefs.schedule(1).initial  # the up-front (random-policy) labels

    def count(part, sign) -> int:
        return sum(1 for j in part if sign * ret[j.left] > 0 or sign * ret[j.right] > 0)

    out = {"judgments": len(js), "clips": {str(v): sum(1 for r in ret.values() if r == v) for v in sorted(set(ret.values()))},
           "with_lost_point": count(js, -1), "with_won_point": count(js, +1)}
    if initial:
        out["initial"] = {"judgments": min(initial, len(js)), "with_won_point": count(js[:initial], +1)}
    return out


def rank_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    from scipy import stats

    i, j = np.triu_indices(len(true), 1)
    strict = true[i] != true[j]
    acc = float(((pred[i] - pred[j]) * np.sign(true[i] - true[j]) > 0)[strict].mean()) if strict.any() else float("nan")
    varies = np.std(true) > 0 and np.std(pred) > 0
    return {
        "clips": int(len(true)),
        "true_return_values": {str(v): int((true == v).sum()) for v in np.unique(true)},
        "spearman": float(stats.spearmanr(pred, true)[0]) if varies else float("nan"),
        "pearson": float(stats.pearsonr(pred, true)[0]) if varies else float("nan"),
        "pair_accuracy": acc,
        "strict_pairs": int(strict.sum()),
    }


def _load_run(rd: RunDir):
    """(run config, clip length, final reward model or None, trained PPO agent) of a finished run."""
    from prefrl.control.agent import build_ppo, load_agent_checkpoint
    from prefrl.control.config import clip_length, load_run_config
    from prefrl.control.envs import make_vec_env
    from prefrl.core.ensemble import RewardEnsemble
    from prefrl.core.utils import set_torch_threads, tune_malloc

    set_torch_threads()
    tune_malloc()
    cfg = load_run_config(rd.path)
    ens = RewardEnsemble.load(rd.reward_model) if rd.reward_model.exists() else None  # None: a true-reward run
    ckpt = load_agent_checkpoint(rd.agent)
    venv = make_vec_env(cfg.task.env, 0)
    model = build_ppo(cfg.task.ppo, venv, cfg.seed)
    model.policy.load_state_dict(ckpt["policy"])
    venv.close()
    return cfg, clip_length(cfg.task), ens, model


def score_held_out(args: argparse.Namespace, cfg, ens, model, length: int, record: int = 0) -> tuple[dict, list]:
    """Rank metrics of the reward model on fresh clips of a random policy, of the agent and of both
    (``--heldout-clips`` each), and the agent's first ``record`` RGB frames."""
    from prefrl.core.types import Clips

    out: dict = {}
    seed = 50_000 + args.seed
    random_clips, _ = collect_clips(cfg, None, args.heldout_clips, length, seed)
    agent_clips, agent_frames = collect_clips(cfg, model, args.heldout_clips, length, seed + 1, record=record)
    for name, clips in (("random", random_clips), ("agent", agent_clips)):
        members = ens.predict_clip_returns(clips.model_inputs())  # (n, M)
        true = clips.true_returns()
        out[name] = rank_metrics(members.mean(axis=1), true)
        out[name]["pricing"] = event_pricing(ens, clips)
        # the ensemble's disagreement (member std of the clip return) by true return: what
        # disagreement-based queries can see; a kind of clip it agrees on is never asked about
        sd = members.std(axis=1)
        out[name]["disagreement"] = {str(v): float(sd[true == v].mean()) for v in np.unique(true)}
    both = Clips.concat([random_clips, agent_clips])
    out["all"] = rank_metrics(ens.predict_clip_returns(both.model_inputs()).mean(axis=1), both.true_returns())
    return out, agent_frames


def held_out(args: argparse.Namespace, rd: RunDir) -> dict:
    """Score the final reward model on fresh clips; write pair and agent videos."""
    from prefrl.core.oracles import make_oracle
    from prefrl.control.atari import write_pair_video
    from prefrl.viz import write_video

    cfg, length, ens, model = _load_run(rd)
    seed = 50_000 + args.seed
    out, agent_frames = score_held_out(args, cfg, ens, model, length, record=args.agent_video_steps)
    if args.random_games:
        out["random_policy"] = random_score(cfg, args.random_games, seed + 3)
    out["labels"] = label_mix(rd)

    videos = args.videos
    videos.mkdir(parents=True, exist_ok=True)
    game = cfg.task.env.id.split("/")[-1].split("-")[0].lower()
    def video(name: str, frames: list) -> None:
        if frames:
            f = np.stack(frames)  # (T, 210, 160, 3): pad to 216 rows, a multiple of 8 for H.264
            f = np.pad(f, ((0, 0), (0, -f.shape[1] % 8), (0, -f.shape[2] % 8), (0, 0)))
            write_video(videos / name, f, fps=15)

    video(f"atari_{game}_agent.mp4", agent_frames)
    if rd.baseline.agent.exists() and args.agent_video_steps:  # the true-reward agent, same start, for comparison
        bcfg, _, _, bmodel = _load_run(rd.baseline)
        video(f"atari_{game}_true_agent.mp4", collect_clips(bcfg, bmodel, 1, length, seed + 1,
                                                             record=args.agent_video_steps)[1])
    # labeled pairs with RGB frames: a random-policy clip against an agent clip, labeled by the synthetic oracle
    pair_clips, _ = collect_clips(cfg, model, 8 * args.pair_videos, length, seed + 2, keep_frames=True)
    rets = pair_clips.true_returns()
    order = np.argsort(rets)  # pair low with high returns where there are both, so the videos show a preference
    pairs = [(order[-1 - k], order[k]) for k in range(args.pair_videos)]
    oracle = make_oracle("synthetic", np.random.default_rng(0))
    pred = ens.predict_clip_returns(pair_clips.model_inputs()).mean(axis=1)
    out["pair_videos"] = []
    for k, (a, b) in enumerate(pairs):
        label = float(oracle.label(pair_clips[[a]], pair_clips[[b]])[0])
        path = write_pair_video(videos / f"atari_{game}_pair{k}.mp4", pair_clips.frames[a], pair_clips.frames[b], label)
        out["pair_videos"].append({"video": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                                   "label": label, "true_returns": [float(rets[a]), float(rets[b])],
                                   "predicted_returns": [round(float(pred[a]), 3), round(float(pred[b]), 3)]})
    return out


def plot(rd: RunDir, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefrl.viz import read_progress

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for label, path in (("learned reward (synthetic labels)", rd.progress),
                        ("true reward", rd.baseline.progress)):
        p = read_progress(path)
        if p:
            ax1.plot(p["timesteps"], p["true_return_mean"], label=label)
    ax1.set_xlabel("agent steps (x4 frames)")
    ax1.set_ylabel("true game score (mean of last 100 games)")
    ax1.grid(alpha=0.3)
    ax1.legend()
    p = read_progress(rd.progress)
    if p:
        ax2.plot(p["timesteps"], p["reward_corr"], label="Pearson r, clip pool")
        ax2b = ax2.twinx()
        ax2b.plot(p["timesteps"], p["labels"], color="grey", ls="--", label="labels")
        ax2b.set_ylabel("labels")
    ax2.set_xlabel("agent steps")
    ax2.set_ylabel("predicted vs true clip return")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def table(args: argparse.Namespace, summary: dict, heldout: dict) -> str:
    base = summary.get("baseline", {})
    cmd = (f"python scripts/bench_atari.py --task {args.task} --steps {args.steps} --seed {args.seed} "
           + " ".join(_learned_flags(args)))
    lines = [
        f"Command: `{cmd}`",
        "",
        "| arm | agent steps (frames) | labels | true score, last games of training | eval score | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("learned reward (synthetic oracle)", summary), ("true reward", base)):
        lines.append(f"| {name} | {s.get('timesteps', 0):,} ({4 * s.get('timesteps', 0):,}) | {s.get('labels', 0)} | "
                     f"{_f(s.get('true_return_mean'))} | {_f(s.get('eval_return_mean'))} | {_f(s.get('wall_s'), 0)} |")
    rnd = heldout.get("random_policy")
    if rnd:
        zero = rnd["mean"]
        def score(s: dict, k: str) -> float:  # a missing score counts as no gain; a score of 0 is a score
            return zero if s.get(k) is None else s[k]

        gain = {k: (score(summary, k) - zero, score(base, k) - zero) for k in ("true_return_mean", "eval_return_mean")}
        lines += ["", f"Gain over a uniformly random policy ({rnd['games']} games: {zero:.2f} ± {rnd['std']:.2f}):", "",
                  "| score | learned-reward gain | true-reward gain | learned / true |", "|---|---|---|---|"]
        for k, label in (("true_return_mean", "last games of training"), ("eval_return_mean", "eval")):
            a, b = gain[k]
            lines.append(f"| {label} | {a:+.2f} | {b:+.2f} | {_f(a / b) if b > 0 else 'n/a'} |")
    lines += [
        "",
        "Reward model on held-out clips (never labeled), predicted vs true clip return:",
        "",
        "| clips | n | true returns | Spearman | Pearson | pair accuracy (strict pairs) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("random", "agent", "all"):
        h = heldout[name]
        vals = ", ".join(f"{k}: {v}" for k, v in h["true_return_values"].items())
        lines.append(f"| {name} | {h['clips']} | {vals} | {_f(h['spearman'])} | {_f(h['pearson'])} | "
                     f"{_f(h['pair_accuracy'])} ({h['strict_pairs']}) |")
    priced = [(name, heldout[name]["pricing"]) for name in ("random", "agent") if "pricing" in heldout[name]]
    if priced:
        lines += ["", "What the final reward model pays per step (the agent's normalised reward, in its std over "
                  "these clips) where a point is lost, won, or neither:", "",
                  "| clips | lost (steps) | won (steps) | neither |", "|---|---|---|---|"]
        for name, pr in priced:
            cell = {k: f"{_f(pr[k]['mean_in_std'])} ({pr[k]['steps']})" for k in ("lost", "won", "none")}
            lines.append(f"| {name} | {cell['lost']} | {cell['won']} | {_f(pr['none']['mean_in_std'])} |")
        lines += ["", "The ensemble's disagreement (std of its members' clip returns), by the clip's true return:", ""]
        for name in ("random", "agent"):
            d = heldout[name].get("disagreement", {})
            lines.append(f"- {name}: " + ", ".join(f"{k}: {v:.3f}" for k, v in d.items()))
    mix = heldout.get("labels")
    if mix:
        clips = ", ".join(f"{k}: {v}" for k, v in mix["clips"].items())
        lines += ["", f"The judgments: {mix['judgments']} over clips with true returns {clips}; "
                  f"{mix['with_lost_point']} compare a clip with a lost point, {mix['with_won_point']} one with a won point"
                  + (f" ({mix['initial']['with_won_point']} of the {mix['initial']['judgments']} up-front ones)."
                     if "initial" in mix else ".")]
    return "\n".join(lines)


def status(args: argparse.Namespace, rd: RunDir) -> str:
    """Where a running or stopped benchmark is: each arm's latest progress row and the curves so far."""
    from prefrl.viz import read_progress

    plot(rd, args.out / "curves.png")
    lines = [f"Status of `{rd.path.name}` (curves so far: `curves.png`)", "",
             "| arm | agent steps | labels | true score, last 100 games | reward-model Pearson r (pool) | wall s | state |",
             "|---|---|---|---|---|---|---|"]
    for name, run in (("learned reward (synthetic oracle)", rd), ("true reward", rd.baseline)):
        p = read_progress(run.progress) if run.progress.exists() else None
        state = "finished" if run.summary.exists() else ("started" if run.config.exists() else "not started")
        if not p or not len(p["timesteps"]):
            lines.append(f"| {name} | 0 | | | | | {state} |")
            continue
        last = {k: v[-1] for k, v in p.items()}
        lines.append(f"| {name} | {int(last['timesteps']):,} | {int(last['labels'])} | {_f(last['true_return_mean'])} | "
                     f"{_f(last['reward_corr'])} | {_f(last['wall_s'], 0)} | {state} |")
    return "\n".join(lines)


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pong-quick")
    ap.add_argument("--steps", type=int, default=30_000, help="agent steps per arm (x4 frames)")
    ap.add_argument("--labels", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--query", help="query selection of the learned arm (default: the preset's); the run dir gets "
                                    "it as a suffix")
    ap.add_argument("--override", nargs="+", metavar="SECTION.KEY=VALUE",
                    help="preset settings of the learned arm (prefrl train --override); the run dir gets them as a suffix")
    ap.add_argument("--reuse-true", type=Path, metavar="DIR",
                    help="copy the finished true-reward arm of an earlier run (its dir, or the learned arm's whose "
                         "baseline/ it is) instead of training it again; same env, PPO, seed and steps required")
    ap.add_argument("--eval-episodes", type=int, default=2)
    ap.add_argument("--heldout-clips", type=int, default=200, help="held-out clips per policy (random, agent)")
    ap.add_argument("--random-games", type=int, default=10,
                    help="games of a uniformly random policy: the zero of the gain-over-random columns (0: none)")
    ap.add_argument("--pair-videos", type=int, default=3)
    ap.add_argument("--agent-video-steps", type=int, default=450, help="steps of the agent video (15 per second)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "atari")
    ap.add_argument("--videos", type=Path, default=ROOT / "videos")
    ap.add_argument("--parallel", action="store_true",
                    help="run the two arms at the same time (two processes) instead of one after the other")
    ap.add_argument("--status", action="store_true",
                    help="only report where the benchmark's runs are (latest progress rows, curves so far)")
    ap.add_argument("--overhead", action="store_true",
                    help="time both arms at once (wall, CPU, peak RSS), then score the learned arm's reward model "
                         "on held-out clips (--heldout-clips 0: not)")
    ap.add_argument("--score-only", action="store_true",
                    help="with --overhead: only score the learned arm already in OUT on held-out clips")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overhead:
        overhead(args)
        return
    if args.status:
        md = status(args, _run_dir(args))
        (args.out / "status.md").write_text(md + "\n")
        print(md)
        return
    rd = _run_dir(args)
    if args.reuse_true:
        rd.path.mkdir(parents=True, exist_ok=True)
        reuse_true_arm(args, rd)

    t0 = time.perf_counter()
    summary = train(args, rd)
    t_train = time.perf_counter() - t0
    heldout = held_out(args, rd)
    plot(rd, args.out / "curves.png")
    result = {"task": args.task, "steps": args.steps, "labels": args.labels, "seed": args.seed,
              "summary": summary, "heldout": heldout, "train_wall_s": round(t_train, 1),
              "total_wall_s": round(time.perf_counter() - t0, 1)}
    write_json_atomic(args.out / RunDir.SUMMARY, result)  # the benchmark's summary, beside its run directory
    md = table(args, summary, heldout)
    (args.out / "table.md").write_text(md + "\n")
    print(md)
    print(json.dumps({k: result[k] for k in ("train_wall_s", "total_wall_s")}))


if __name__ == "__main__":
    main()
