"""The text RLHF steps as functions over files (the commands and the benchmark call these).

corpus -> SFT -> oracle-labeled pairs of sampled completions (kept in a preference store,
exported as JSONL) -> reward model -> PPO / DPO -> evaluation (oracle score, reward-model
score, KL to the reference, diversity). Run directories use the core ``RunDir`` names
(``progress.csv``, ``summary.json``, ``policy/``, ``tb/``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from prefrl.core.monitor import MonitorConfig, TextMonitor
from prefrl.core.query import disagreement
from prefrl.core.rundir import RunDir
from prefrl.core.store import PreferenceStore, trl_record
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.core.types import PrefrlError
from prefrl.text.corpus import make_corpus, make_prompts
from prefrl.text.data import TextPreferences, read_preferences, read_prompts, read_sft, write_jsonl
from prefrl.text.lm import SampleConfig, TinyGPTConfig, load_lm, new_tiny_lm, sample, save_lm, sequence_kl, train_tokenizer
from prefrl.text.logger import RunLogger
from prefrl.text.model import TextRewardModel
from prefrl.text.oracles import TextOracle

LABEL_FORMATS = ("trl", "vertex", "kwise")


# ---- data -------------------------------------------------------------------------------------
def make_demo_data(out: Path, n_sft: int = 6000, n_prompts: int = 1000, n_eval_prompts: int = 256, seed: int = 0) -> dict[str, Path]:
    """Write the demo corpus: ``sft.jsonl``, ``prompts.jsonl`` (train) and ``eval_prompts.jsonl``."""
    out = Path(out)
    paths = {"sft": out / "sft.jsonl", "prompts": out / "prompts.jsonl", "eval_prompts": out / "eval_prompts.jsonl"}
    write_jsonl(paths["sft"], [{"prompt": e.prompt, "completion": e.completion} for e in make_corpus(n_sft, seed)])
    write_jsonl(paths["prompts"], [{"prompt": p} for p in make_prompts(n_prompts, seed + 1)])
    write_jsonl(paths["eval_prompts"], [{"prompt": p} for p in make_prompts(n_eval_prompts, seed + 2)])
    return paths


# ---- SFT --------------------------------------------------------------------------------------
def run_sft(data: Path, out: Path, model: Path | None, tiny: TinyGPTConfig, cfg, seed: int = 0) -> dict[str, float]:
    """Fine-tune ``model`` (or a tiny GPT-2 made from scratch on the data) and save it to ``out``."""
    from prefrl.text.sft import train_sft

    examples = read_sft(data)
    torch.manual_seed(seed)
    if model is None:
        tok = train_tokenizer([e.prompt + e.completion for e in examples], tiny.vocab_size)
        lm = new_tiny_lm(tok, tiny)
    else:
        lm, tok = load_lm(model)
    logger = RunLogger(out, tensorboard=False)
    metrics = train_sft(lm, tok, examples, cfg, np.random.default_rng(seed), log=logger)
    logger.close()
    n_params = sum(p.numel() for p in lm.parameters())
    info = {"kind": "sft", "data": str(data), "init": str(model) if model else {"tiny": tiny.to_dict()}, "sft": cfg.to_dict(),
            "seed": seed, "metrics": metrics, "parameters": n_params}
    save_lm(lm, tok, out, info)
    return {**metrics, "sft/parameters": float(n_params)}


# ---- oracle labels ----------------------------------------------------------------------------
def label_samples(
    policy: Path,
    prompts: list[str],
    out: Path,
    oracle: TextOracle,
    fmt: str = "trl",
    k: int = 2,
    sample_cfg: SampleConfig | None = None,
    seed: int = 0,
    reward_model: Path | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Sample ``k`` completions per prompt from ``policy``, have ``oracle`` judge them, write ``out``.

    ``trl``/``vertex``: one pair per prompt; with k > 2 and a reward-model ensemble, the pair
    whose preference the members disagree on most (core ``disagreement``), else a random one.
    The pairs (text items, with the oracle's scores) and the oracle's judgments go into the
    preference store in ``out``'s directory (``prefs.sqlite``; created, or added to): the
    oracle labels every pair in one call and its judgments are committed the moment it
    returns. ``out`` is then exported from the store: the JSONL lines of this call's
    judgments. Ties are written as ``"label": 0.5`` and skips as ``"label": null`` in TRL
    lines (Vertex lines cannot hold them, so those are dropped from ``out``; the store keeps
    them). The store can be read back by ``prefrl text reward DIR`` and holds every call's
    judgments, so keep pairs for different purposes (train / test) in different directories.

    ``kwise``: the k completions ranked by the oracle score (``synthetic``: exactly;
    ``stochastic``: Plackett-Luce sampled with ``beta``). A ranking is not a set of pairwise
    judgments (its C(k, 2) pairs are weighted 1/C(k, 2) together), so rankings stay
    JSONL-only: nothing is written to the store.
    """
    if fmt not in LABEL_FORMATS:
        raise PrefrlError(f"unknown preference format `{fmt}` (known: {', '.join(LABEL_FORMATS)})")
    if k < 2:
        raise PrefrlError(f"`k` (completions per prompt) must be >= 2, got {k}")
    out = Path(out)
    if out.is_dir():
        raise PrefrlError(f"{out}: is a directory; `--out` is the preference JSONL file (the store goes beside it)")
    sample_cfg = sample_cfg or SampleConfig()
    lm, tok = load_lm(policy)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    completions: list[list[str]] = []
    per_batch = max(1, batch_size // k)
    for s in range(0, len(prompts), per_batch):
        chunk = prompts[s : s + per_batch]
        texts = sample(lm, tok, [p for p in chunk for _ in range(k)], sample_cfg, g).completions
        completions += [texts[i * k : (i + 1) * k] for i in range(len(chunk))]
    if fmt == "kwise":
        return _label_rankings(prompts, completions, out, oracle, k, rng)
    rm = TextRewardModel.load(reward_model) if reward_model is not None else None
    dropped = 0
    pairs = []
    for i, cs in enumerate(completions):
        cand = [(a, b) for a in range(k) for b in range(a + 1, k) if cs[a] != cs[b]]
        if not cand:
            dropped += 1
            continue
        if rm is not None and rm.ensemble.n_members > 1 and len(cand) > 1:
            inputs = rm.encode([prompts[i]] * k, cs)
            var = disagreement(rm.ensemble, inputs, np.array(cand))
            a, b = cand[int(np.argmax(var))]
        else:
            a, b = cand[int(rng.integers(len(cand)))]
        pairs.append((prompts[i], cs[a], cs[b]))
    pair_prompts = [p for p, _, _ in pairs]
    # a scripted text oracle (scores + teacher) or a pairwise judge (prefrl.text.judge: no scores)
    score_l, score_r, labels = oracle.judge(pair_prompts, [x for _, x, _ in pairs], [x for _, _, x in pairs])
    with PreferenceStore(out.parent) as store:
        ids = store.add_texts([p for p in pair_prompts for _ in (0, 1)], [x for _, l, r in pairs for x in (l, r)],
                              [v for lr in zip(score_l, score_r) for v in lr])
        jids = store.add_judgments(np.array(ids, np.int64).reshape(-1, 2), labels, source=oracle.source,
                                   annotator=getattr(oracle, "annotator", None))
        rows, n_dropped, ties, skips = export_judgments(store, jids, fmt, rng)
        in_store = store.count_judgments()
    write_jsonl(out, rows)
    return {"label/lines": float(len(rows)), "label/dropped": float(dropped + n_dropped), "label/ties": float(ties),
            "label/skips": float(skips), "label/store_judgments": float(in_store)}


def export_judgments(
    store: PreferenceStore, judgment_ids: list[int], fmt: str = "trl", rng: np.random.Generator | None = None
) -> tuple[list[dict], int, int, int]:
    """JSONL rows of stored text judgments: TRL lines (``trl_record``) or Vertex lines.

    Vertex lines hold strict preferences only: ties, skips and soft labels are dropped, and the
    preferred candidate's position (``choice``) is drawn from ``rng``.

    Returns:
        rows, lines dropped, ties, skips.
    """
    if fmt not in ("trl", "vertex"):
        raise PrefrlError(f"stored judgments export as `trl` or `vertex` lines, not `{fmt}`")
    rng = rng if rng is not None else np.random.default_rng(0)
    wanted = set(judgment_ids)
    js = [j for j in store.judgments(since_id=min(wanted) - 1 if wanted else 0) if j.id in wanted]
    ids = sorted({j.left for j in js} | {j.right for j in js})
    texts = dict(zip(ids, store.load_texts(ids)))
    rows, dropped, ties, skips = [], 0, 0, 0
    for j in js:
        (p, left), (p_right, right) = texts[j.left], texts[j.right]
        if p != p_right:
            raise PrefrlError(f"{store.path}: judgment {j.id} compares completions of different prompts; a JSONL line holds one prompt")
        lab = j.label
        ties += lab == 0.5
        skips += lab is None
        if fmt == "trl":
            rows.append(trl_record(p, left, right, lab))
        elif lab not in (0.0, 1.0):
            dropped += 1
        else:
            chosen, rejected = (left, right) if lab == 1.0 else (right, left)
            swap = bool(rng.integers(2))
            c0, c1 = (rejected, chosen) if swap else (chosen, rejected)
            rows.append({"input_text": p, "candidate_0": c0, "candidate_1": c1, "choice": int(swap)})
    return rows, dropped, ties, skips


def _label_rankings(prompts: list[str], completions: list[list[str]], out: Path, oracle: TextOracle, k: int,
                    rng: np.random.Generator) -> dict[str, float]:
    """K-wise lines: each prompt's ``k`` completions ranked by the oracle (JSONL only, see ``label_samples``)."""
    teacher = oracle.teacher
    if teacher.name not in ("synthetic", "stochastic"):
        raise PrefrlError(f"K-wise rankings come from the `synthetic` or `stochastic` teacher, not `{teacher.name}`")
    rows = []
    for p, cs in zip(prompts, completions):
        score = oracle.score([p] * k, cs)
        noise = rng.gumbel(size=k) if teacher.name == "stochastic" else rng.random(k) * 1e-9
        key = score * (teacher.cfg.beta if teacher.name == "stochastic" else 1.0) + noise
        rows.append({"prompt": p, "completions": cs, "ranking": np.argsort(-key, kind="stable").tolist()})
    write_jsonl(out, rows)
    return {"label/lines": float(len(rows)), "label/dropped": 0.0, "label/ties": 0.0, "label/skips": 0.0}


# ---- reward model -----------------------------------------------------------------------------
def fit_reward(
    data: list[Path],
    out: Path,
    init_from: Path,
    train_cfg: RewardTrainConfig,
    members: int = 1,
    max_length: int | None = None,
    seed: int = 0,
    eval_data: list[Path] | None = None,
    export_member: int | None = 0,
) -> tuple[TextRewardModel, dict[str, float]]:
    """Fit a text reward model with the core trainer; save it (and its HF export) under ``out``.

    ``data`` (and ``eval_data``): preference JSONL files and directories holding a preference
    store (read as its text judgments; ``prefrl.text.data.read_preferences``).
    """
    prefs = read_preferences(data)
    torch.manual_seed(seed)
    rm = TextRewardModel.create(init_from, n_members=members, max_length=max_length)
    inputs = rm.encode(prefs.prompts, prefs.completions)
    trainer = RewardTrainer(rm.ensemble, train_cfg, np.random.default_rng(seed))
    t0 = time.perf_counter()
    metrics = trainer.fit(inputs, prefs.comparisons)
    metrics["reward/fit_s"] = time.perf_counter() - t0
    metrics["reward/train_tokens_per_s"] = _fit_tokens_per_s(inputs, metrics)
    rm.normalise_on(prefs.prompts, prefs.completions)  # the data's completions are the reference's samples
    if eval_data:
        test = read_preferences(eval_data)
        for key, v in trainer.evaluate(rm.encode(test.prompts, test.completions), test.comparisons).items():
            metrics[f"reward/test/{key}"] = v
    rm.save(out, extra={"data": [str(p) for p in data], "init_from": str(init_from), "train": train_cfg.__dict__,
                        "metrics": metrics, "formats": prefs.formats})
    if export_member is not None:
        rm.export_hf(Path(out) / "hf", member=export_member)
    return rm, metrics


def _fit_tokens_per_s(inputs: dict[str, np.ndarray], metrics: dict[str, float]) -> float:
    """Training tokens/s of a fit: 2 clips of mean length per comparison step."""
    mean_len = float(inputs["attention_mask"].sum(-1).mean())
    return 2 * mean_len * metrics.get("reward/comparisons_per_s", 0.0)


def rm_accuracy(rm: TextRewardModel, prefs: TextPreferences) -> dict[str, float]:
    """Accuracy / margin of a reward model on strict labeled comparisons of a preference set."""
    trainer = RewardTrainer(rm.ensemble)
    return trainer.evaluate(rm.encode(prefs.prompts, prefs.completions), prefs.comparisons)


# ---- evaluation -------------------------------------------------------------------------------
def evaluate_policy(
    policy: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    sample_cfg: SampleConfig,
    seed: int = 0,
    oracle: TextOracle | None = None,
    ref: torch.nn.Module | None = None,
    rm: TextRewardModel | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Sample one completion per prompt; oracle score, reward-model score, KL to ``ref``, diversity."""
    t0 = time.perf_counter()
    if ref is not None:
        kl, texts = sequence_kl(policy, ref, tokenizer, prompts, sample_cfg, seed)
    else:
        from prefrl.text.lm import sample_texts

        kl, texts = float("nan"), sample_texts(policy, tokenizer, prompts, sample_cfg, seed)
    out = {"eval/kl": kl, "eval/words": float(np.mean([len(t.split()) for t in texts])),
           "eval/distinct": len(set(texts)) / max(len(texts), 1), "eval/s": time.perf_counter() - t0}
    if oracle is not None:
        s = oracle.score(prompts, texts)
        out["eval/oracle_score"] = float(s.mean())
        out["eval/oracle_positive"] = float((s > 0.05).mean())
    if rm is not None:
        out["eval/rm_score"] = float(rm.score(prompts, texts).mean())
    return out, texts


# ---- PPO and DPO ------------------------------------------------------------------------------
def _check_same_vocab(policy, ref, ref_dir: Path) -> None:
    a, b = policy.get_input_embeddings().num_embeddings, ref.get_input_embeddings().num_embeddings
    if a != b:
        raise PrefrlError(f"{ref_dir}: the reference model has {b} token embeddings, the policy {a}; they must share a tokenizer")


def run_ppo(
    policy_dir: Path,
    prompts: list[str],
    out: Path,
    ppo_cfg,
    sample_cfg: SampleConfig,
    reward_model: Path | None = None,
    reward_oracle: TextOracle | None = None,
    ref_dir: Path | None = None,
    watch_oracle: TextOracle | None = None,
    ptx_data: Path | None = None,
    normalise_reference: bool = True,
    seed: int = 0,
    tensorboard: bool = True,
    monitor: MonitorConfig | None = None,
) -> dict[str, float]:
    """PPO against a reward model (or an oracle's score, for ablations); saves ``out/policy``.

    ``monitor``: the reward-hacking monitor's settings (default: on, warn); its block goes to
    summary.json under ``monitor`` and its signals to progress.csv / TensorBoard as ``monitor/*``.
    """
    from prefrl.text.ppo import TextPPOTrainer

    if (reward_model is None) == (reward_oracle is None):
        raise PrefrlError("give exactly one of `--reward-model` (a text reward model) and `--reward-oracle` (an oracle name)")
    torch.manual_seed(seed)
    policy, tok = load_lm(policy_dir)
    ref = load_lm(ref_dir)[0] if ref_dir is not None else copy.deepcopy(policy)
    if ref_dir is not None:
        _check_same_vocab(policy, ref, ref_dir)
    if reward_model is not None:
        rm = TextRewardModel.load(reward_model)
        if normalise_reference:  # reference completions average 0 (Ziegler et al. 2019)
            ref_prompts = prompts[:256]
            g = torch.Generator().manual_seed(seed + 7)
            ref_texts = []
            for s in range(0, len(ref_prompts), 64):
                ref_texts += sample(ref, tok, ref_prompts[s : s + 64], sample_cfg, g).completions
            rm.normalise_on(ref_prompts, ref_texts)

        def reward_fn(p: list[str], c: list[str]) -> np.ndarray:
            return rm.score(p, c)
    else:
        assert reward_oracle is not None

        def reward_fn(p: list[str], c: list[str]) -> np.ndarray:
            return reward_oracle.score(p, c)

    monitor = monitor if monitor is not None else MonitorConfig()
    watch = TextMonitor(monitor) if monitor.enabled else None
    logger = RunLogger(out, tensorboard=tensorboard)
    trainer = TextPPOTrainer(
        policy, tok, reward_fn, prompts, ppo_cfg, sample_cfg, ref=ref, rng=np.random.default_rng(seed), seed=seed,
        ptx_data=read_sft(ptx_data) if ptx_data is not None else None,
        oracle=watch_oracle.score if watch_oracle is not None else None, log=logger, monitor=watch,
    )
    t0 = time.perf_counter()
    history = trainer.train()
    logger.close()
    summary = {**(history[-1] if history else {}), "ppo/wall_s": time.perf_counter() - t0, "ppo/steps": float(len(history))}
    if watch is not None:
        summary["monitor"] = {**watch.summary(), **({"stopped_at": trainer.stopped_at} if trainer.stopped_at else {})}
    save_lm(policy, tok, RunDir(out).policy, {"kind": "ppo", "from": str(policy_dir), "ppo": ppo_cfg.to_dict(),
                                                 "sample": sample_cfg.to_dict(), "summary": summary})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainer.model.v_head.state_dict().items()}, str(Path(out) / "value_head.safetensors"))
    RunDir(out).write_summary(summary)
    return summary


def run_dpo(policy_dir: Path, data: list[Path], out: Path, dpo_cfg, ref_dir: Path | None = None, seed: int = 0,
            tensorboard: bool = True) -> dict[str, float]:
    """DPO on preference files; saves the policy (HF format) to ``out/policy``."""
    from prefrl.text.dpo import DPOTrainer

    torch.manual_seed(seed)
    prefs = read_preferences(data)
    policy, tok = load_lm(policy_dir)
    ref = load_lm(ref_dir)[0] if ref_dir is not None else copy.deepcopy(policy)
    if ref_dir is not None:
        _check_same_vocab(policy, ref, ref_dir)
    logger = RunLogger(out, tensorboard=tensorboard)
    t0 = time.perf_counter()
    metrics = DPOTrainer(policy, ref, tok, prefs, dpo_cfg, np.random.default_rng(seed), log=logger).train()
    logger.close()
    metrics["dpo/wall_s"] = time.perf_counter() - t0
    save_lm(policy, tok, RunDir(out).policy, {"kind": "dpo", "from": str(policy_dir), "data": [str(p) for p in data],
                                                 "dpo": dpo_cfg.to_dict(), "metrics": metrics})
    RunDir(out).write_summary(metrics)
    return metrics


def load_prompts(path: Path, limit: int | None = None) -> list[str]:
    prompts = read_prompts(path)
    return prompts[:limit] if limit else prompts
