"""`prefrl rate`: ratings of control policies (run directories' agents) from comparisons of their clips.

Each run's saved agent (``agent.pt``: the final agent, or the last checkpoint of an interrupted
run) plays on a fresh env seed and its play is cut into clips of the task's clip length. A
judgment compares a clip of one policy with a clip of another: a scripted teacher on the true
reward (``--oracle``), or people in the viewer (``--human``: the pairs are queued in OUT's
store and ``prefrl label --run-dir OUT`` shows them). Bradley-Terry ratings with bootstrap
intervals are fit on the judgments (``prefrl.core.ratings``); ``--adaptive`` asks next about
the pair of policies whose order is least certain.

OUT holds the store (clips, judgments, which clip came from which run), ``ratings.md``,
``ratings.json`` and ``ratings.png``; rerunning on the same OUT resumes: its clips and
judgments are reused and only the missing comparisons are asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefrl.core.ratings import (
    RatingFlags,
    RatingPlan,
    display_names,
    record_pool,
    stored_pools,
    write_ratings,
)
from prefrl.core.rundir import Meta, RunDir
from prefrl.core.store import STORE_FILE, PreferenceStore
from prefrl.core.types import Clips, PrefrlError


@dataclass(kw_only=True)
class RateCommand(RatingFlags):
    """Rate policies (run directories' agents) from comparisons of their clips: Bradley-Terry ratings, bootstrap intervals."""

    run_dirs: list[Path]
    """Run directories written by `prefrl train` (two or more; each needs its agent.pt)."""
    out: Path = Path("runs/rate")
    """Where the store of comparisons, ratings.md, ratings.json and ratings.png go (a rerun resumes)."""
    oracle: str | None = None
    """Scripted teacher on the true reward: synthetic (default), stochastic, myopic, mistake, skip, equal."""
    clips: int = 30
    """Clips sampled from each agent."""
    deterministic: bool = False
    """Clips of the agents' mean actions (default: actions sampled from the policy, as in training)."""
    seed: int = 0
    """Seed of the clips' env, the pair choice, the oracle and the bootstrap."""

    def run(self) -> dict:
        from prefrl.control.envs import ensure_headless_rendering
        from prefrl.viz import plot_ratings

        runs = self.check()
        ensure_headless_rendering()
        rng = np.random.default_rng(self.seed)
        with PreferenceStore(self.out) as store:
            keys, names, pools = self._pools(store, runs)
            pool_returns = [store.load_clips(p).true_returns() for p in pools]
            plan = RatingPlan(keys, names, pools, aligned=False, load=lambda ids: store.load_clips(ids))
            ratings, oracle = self.rate_in_store(store, plan, self.oracle, rng, np.concatenate(pool_returns))
        ratings.extra["clip return"] = [float(r.mean()) for r in pool_returns]
        info = {"run_dirs": dict(zip(names, keys)), "oracle": oracle,
                "scheme": "adaptive" if self.adaptive else "uniform", "clips_per_policy": self.clips,
                "deterministic": self.deterministic}
        md, js = write_ratings(self.out, ratings, info)
        png = plot_ratings(ratings, self.out / "ratings.png", title="prefrl rate")
        print(ratings.markdown())
        print(f"wrote {md}, {js}, {png}")
        return {**ratings.to_json(), **info}

    def check(self) -> list[tuple[Path, object]]:
        """Refuse bad input before anything runs; returns (run dir, its config) of each policy."""
        from prefrl.control.config import clip_length, load_run_config

        self.check_flags(self.oracle)
        if self.clips < 2:
            raise PrefrlError(f"`--clips` must be >= 2, got {self.clips}")
        if len(self.run_dirs) < 2:
            raise PrefrlError(f"`--run-dirs` needs at least two run directories to compare, got {len(self.run_dirs)}")
        seen: dict[Path, Path] = {}
        runs = []
        for d in self.run_dirs:
            if not d.exists():
                raise PrefrlError(f"{d}: no such run directory")
            if not d.is_dir():
                raise PrefrlError(f"{d}: not a directory")
            if d.resolve() in seen:
                raise PrefrlError(f"{d}: given twice in `--run-dirs` (as {seen[d.resolve()]})")
            seen[d.resolve()] = d
            if not RunDir(d).config.is_file():
                raise PrefrlError(f"{d}: not a prefrl run directory (no {RunDir.CONFIG}); train one with `prefrl train`")
            if not RunDir(d).agent.is_file():
                raise PrefrlError(f"{d}: no agent to rate ({RunDir.AGENT} is missing: the run saved no checkpoint yet)")
            runs.append((d, load_run_config(d)))
        kinds = {(c.task.env.id, clip_length(c.task)) for _, c in runs}
        if len(kinds) > 1:
            listed = ", ".join(f"{d} ({c.task.env.id}, clips of {clip_length(c.task)} steps)" for d, c in runs)
            raise PrefrlError(f"the runs must share an environment and clip length to compare their clips: {listed}")
        if self.out.exists() and not self.out.is_dir():
            raise PrefrlError(f"{self.out}: exists and is not a directory")
        if (self.out / STORE_FILE).is_file():
            self._check_existing(runs)
        return runs

    def _check_existing(self, runs: list[tuple[Path, object]]) -> None:
        """An existing OUT must hold clips a rerun can use (and frames, for people)."""
        with PreferenceStore(self.out, create=False, readonly=True) as store:
            pools = stored_pools(store)
            if store.text_ids():
                raise PrefrlError(f"{self.out}: holds text items (a `prefrl text rate` output); rate control policies into another --out")
            if self.human:
                for d, _ in runs:
                    ids = pools.get(str(d.resolve()))
                    if ids:
                        try:
                            store.load_clips(ids[:1], frames=True)
                        except PrefrlError as e:
                            raise PrefrlError(f"{self.out}: the clips of {d} were sampled without frames (for a scripted "
                                              "teacher), so people cannot judge them; use another --out for --human") from e

    def _pools(self, store: PreferenceStore, runs: list[tuple[Path, object]]) -> tuple[list[str], list[str], list[list[int]]]:
        """Each run's clip ids in the store, sampling (and recording) the clips of runs it lacks."""
        stored = stored_pools(store)
        keys = [str(d.resolve()) for d, _ in runs]
        for (d, cfg), key in zip(runs, keys):
            if key in stored:
                print(f"{d}: {len(stored[key])} clips already in {self.out}")
                continue
            clips = agent_clips(d, self.clips, frames=self.human, deterministic=self.deterministic,
                                seed_offset=40_000 + 1000 * self.seed)
            ids = store.add_clips(clips, keep_frames=self.human)
            record_pool(store, key, ids)
            stored[key] = ids
            print(f"{d}: sampled {len(ids)} clips (mean true return {clips.true_returns().mean():.2f})")
        cfg = runs[0][1]
        store.set_meta(Meta.TASK.value, cfg.task.name)
        from prefrl.control.envs import env_dt

        dt = env_dt(cfg.task.env)
        if dt:
            store.set_meta(Meta.RENDER_FPS.value, round(1.0 / dt, 2))
        return keys, display_names([d for d, _ in runs]), [stored[k] for k in keys]


def agent_clips(run_dir: Path, n: int, frames: bool = False, deterministic: bool = False, seed_offset: int = 40_000) -> Clips:
    """``n`` clips (the task's clip length) of the run's saved agent playing on a fresh env seed."""
    from prefrl.control.diagnose import play_clips

    collector, limit = play_clips(run_dir, n, frames=frames, deterministic=deterministic, seed_offset=seed_offset)
    if collector.total_clips < n:
        raise PrefrlError(f"{run_dir}: the agent produced {collector.total_clips} of {n} clips in {limit} steps")
    return collector.clips()
