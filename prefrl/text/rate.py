"""`prefrl text rate`: ratings of text policies from comparisons of their completions of shared prompts.

Every policy (a model directory, or a text run directory with ``policy/``) completes the same
prompts; a judgment compares two policies' completions of one prompt: a scripted teacher on a
text oracle's score (``--oracle vader|keyword|length``, noise from ``--teacher``), or people
(``--human``: the pairs are queued in OUT's store for ``prefrl label --run-dir OUT``).
Bradley-Terry ratings with bootstrap intervals as for control policies (``prefrl.core.ratings``);
OUT holds the store, ``ratings.md``, ``ratings.json`` and ``ratings.png``, and a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from prefrl.core.rundir import RunDir
from prefrl.core.store import STORE_FILE, PreferenceStore
from prefrl.core.types import PrefrlError, TextItems
from prefrl.text.config import SampleConfig
from prefrl.text.oracles import make_scorer


@dataclass(kw_only=True)
class TextRate(RatingFlags):
    """Rate text policies from comparisons of their completions of shared prompts: Bradley-Terry ratings, bootstrap intervals."""

    run_dirs: list[Path]
    """Policies: model directories, or text run directories holding policy/ (two or more)."""
    prompts: Path
    """JSONL with a `prompt` per line; every policy completes the same ones."""
    out: Path = Path("runs/text-rate")
    """Where the store of comparisons, ratings.md, ratings.json and ratings.png go (a rerun resumes)."""
    oracle: str = "vader"
    """Text oracle whose score the scripted teacher compares (and the table shows): vader, keyword, length."""
    teacher: str | None = None
    """Scripted-teacher noise on the score: synthetic (default), stochastic, myopic, mistake, skip, equal."""
    n_prompts: int = 64
    """Use the first this-many prompts."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0
    """Seed of sampling (the same for every policy), pair choice, teacher and bootstrap."""

    def run(self) -> dict:
        from prefrl.text.data import read_prompts
        from prefrl.viz import plot_ratings

        models = self.check()
        prompts = read_prompts(self.prompts)[: self.n_prompts]
        scorer = make_scorer(self.oracle)
        rng = np.random.default_rng(self.seed)
        with PreferenceStore(self.out) as store:
            keys = [str(m.resolve()) for m in models]
            stored = stored_pools(store)
            for m, key in zip(models, keys):
                if key in stored:
                    print(f"{m}: {len(stored[key])} completions already in {self.out}")
                    continue
                completions = policy_completions(m, prompts, self.sample, self.seed)
                scores = [scorer(c) for c in completions]
                stored[key] = store.add_texts(prompts, completions, scores)
                record_pool(store, key, stored[key])
                print(f"{m}: {len(completions)} completions (mean {self.oracle} score {np.mean(scores):.3f})")
            pools = [stored[k] for k in keys]
            pool_scores = [np.array(store.text_scores(p), np.float64) for p in pools]
            names = display_names(self.run_dirs)
            plan = RatingPlan(keys, names, pools, aligned=True, load=lambda ids: load_text_items(store, ids))
            ratings, oracle = self.rate_in_store(store, plan, self.teacher, rng, np.concatenate(pool_scores))
        ratings.extra[f"{self.oracle} score"] = [float(np.nanmean(s)) for s in pool_scores]
        info = {"run_dirs": dict(zip(names, keys)), "oracle": oracle, "score": self.oracle,
                "scheme": "adaptive" if self.adaptive else "uniform", "prompts": str(self.prompts)}
        md, js = write_ratings(self.out, ratings, info)
        png = plot_ratings(ratings, self.out / "ratings.png", title="prefrl text rate")
        print(ratings.markdown())
        print(f"wrote {md}, {js}, {png}")
        return {**ratings.to_json(), **info}

    def check(self) -> list[Path]:
        """Refuse bad input before anything runs; returns each policy's model directory."""
        self.check_flags(self.teacher, "--teacher")
        make_scorer(self.oracle)  # unknown name: close matches
        if isinstance(self.n_prompts, bool) or not isinstance(self.n_prompts, int) or self.n_prompts < 1:
            raise PrefrlError(f"`--n-prompts` must be an integer >= 1, got {self.n_prompts!r}")
        if not self.prompts.is_file():
            raise PrefrlError(f"{self.prompts}: no such prompts file")
        if len(self.run_dirs) < 2:
            raise PrefrlError(f"`--run-dirs` needs at least two policies to compare, got {len(self.run_dirs)}")
        models, seen = [], {}
        for d in self.run_dirs:
            if not d.exists():
                raise PrefrlError(f"{d}: no such policy or run directory")
            m = policy_dir(d)
            if m.resolve() in seen:
                raise PrefrlError(f"{d}: the same policy as {seen[m.resolve()]} in `--run-dirs`")
            seen[m.resolve()] = d
            models.append(m)
        if self.out.exists() and not self.out.is_dir():
            raise PrefrlError(f"{self.out}: exists and is not a directory")
        if (self.out / STORE_FILE).is_file():
            with PreferenceStore(self.out, create=False, readonly=True) as store:
                if store.clip_ids():
                    raise PrefrlError(f"{self.out}: holds clips (a `prefrl rate` output); rate text policies into another --out")
        return models


def policy_dir(path: Path) -> Path:
    """The model directory of a text policy: ``path/policy`` (a PPO or DPO run) or ``path`` itself (an SFT output)."""
    if not path.is_dir():
        raise PrefrlError(f"{path}: not a directory")
    for cand in (RunDir(path).policy, path):
        if (cand / "config.json").is_file() and (any(cand.glob("*.safetensors")) or any(cand.glob("*.bin"))):
            return cand
    raise PrefrlError(f"{path}: no text policy in it (expected a Hugging Face model directory, or a run directory with "
                      f"{RunDir.POLICY}/ from `prefrl text ppo` or `prefrl text dpo`)")


def policy_completions(model_dir: Path, prompts: list[str], sample: SampleConfig, seed: int) -> list[str]:
    """One completion of each prompt by the policy in ``model_dir``."""
    from prefrl.text.lm import load_lm, sample_texts

    lm, tok = load_lm(model_dir)
    return sample_texts(lm, tok, prompts, sample, seed)


def load_text_items(store: PreferenceStore, ids: list[int]) -> TextItems:
    """Stored text items with their oracle scores (what a scripted teacher compares)."""
    texts = store.load_texts(ids)
    scores = store.text_scores(ids)
    return TextItems([p for p, _ in texts], [c for _, c in texts], {},
                     None if any(s is None for s in scores) else np.array(scores, np.float32))


COMMANDS = {"text rate": TextRate}
