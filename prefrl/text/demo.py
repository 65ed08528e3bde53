"""The demo task end to end: "continue a review positively".

SFT a tiny GPT-2 on the made review corpus; sample pairs of completions and label them
with a text oracle (VADER by default, with a scripted teacher's noise) into a preference
store (``prefs/``, exported as ``prefs/train.jsonl``; the held-out pairs in ``test-prefs/``);
fit the reward model with the core trainer; then PPO (per-token KL to the SFT model) and
DPO (same pairs) each try to raise the oracle's score while staying close to the SFT model.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefrl.core.rundir import RunDir
from prefrl.text.config import DPOConfig, PPOConfig, SampleConfig, SFTConfig, TinyGPTConfig, text_reward_train


def run_demo(
    out: Path,
    pairs: int,
    oracle_args,
    sft_cfg: SFTConfig,
    ppo_cfg: PPOConfig,
    dpo_cfg: DPOConfig,
    n_sft: int = 6000,
    n_eval: int = 256,
    seed: int = 0,
    test_pairs: int = 500,
    tiny: TinyGPTConfig | None = None,
    reward_train=None,
    sample_cfg: SampleConfig | None = None,
    verbose: bool = True,
) -> dict:
    """Run every step under ``out``; returns (and writes ``summary.json``) the before/after figures."""
    from prefrl.text.corpus import make_prompts
    from prefrl.text.data import read_prompts
    from prefrl.text.lm import load_lm
    from prefrl.text.oracles import TextOracle
    from prefrl.text.pipeline import evaluate_policy, fit_reward, label_samples, make_demo_data, run_dpo, run_ppo, run_sft

    out = Path(out)
    sample_cfg = sample_cfg or SampleConfig()
    say = print if verbose else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = make_demo_data(out / "data", n_sft, max(pairs, 1), n_eval, seed)
    say(f"[demo] corpus -> {out / 'data'}")
    m_sft = run_sft(data["sft"], out / "sft", None, tiny or TinyGPTConfig(), sft_cfg, seed)
    timings["sft_s"] = time.perf_counter() - t
    say(f"[demo] SFT loss {m_sft['sft/loss']:.3f} ({timings['sft_s']:.0f} s, {m_sft['sft/tokens_per_s']:.0f} tokens/s)")

    t = time.perf_counter()
    train_prompts, eval_prompts = read_prompts(data["prompts"]), read_prompts(data["eval_prompts"])
    oracle = oracle_args.build(seed)
    m_lab = label_samples(out / "sft", train_prompts[:pairs], out / "prefs" / "train.jsonl", oracle, "trl", 2, sample_cfg, seed)
    exact = TextOracle(oracle_args.oracle, "synthetic", on=oracle_args.on)  # held-out labels: the noiseless oracle
    test = out / "test-prefs" / "test.jsonl"  # a store of its own, so the train store holds train pairs only
    label_samples(out / "sft", make_prompts(test_pairs, seed + 99), test, exact, "trl", 2, sample_cfg, seed + 99)
    timings["label_s"] = time.perf_counter() - t
    say(f"[demo] labeled {m_lab['label/lines']:.0f} pairs with `{oracle_args.oracle}` / `{oracle_args.teacher}`")

    t = time.perf_counter()
    rcfg = reward_train or text_reward_train(lr=3e-4, val_fraction=0.2)
    _, m_rm = fit_reward([out / "prefs"], out / "reward", out / "sft", rcfg, seed=seed, eval_data=[test])
    timings["reward_s"] = time.perf_counter() - t
    say(f"[demo] reward model: val accuracy {m_rm.get('reward/val/accuracy', float('nan')):.3f}, "
        f"test accuracy vs oracle {m_rm.get('reward/test/accuracy', float('nan')):.3f}")

    t = time.perf_counter()
    watch = TextOracle(oracle_args.oracle, on=oracle_args.on)
    m_ppo = run_ppo(out / "sft", train_prompts, out / "ppo", ppo_cfg, sample_cfg, reward_model=out / "reward",
                    watch_oracle=watch, seed=seed, tensorboard=False)
    timings["ppo_s"] = time.perf_counter() - t
    say(f"[demo] PPO: {ppo_cfg.steps} steps ({timings['ppo_s']:.0f} s)")

    t = time.perf_counter()
    m_dpo = run_dpo(out / "sft", [out / "prefs" / "train.jsonl"], out / "dpo", dpo_cfg, seed=seed, tensorboard=False)
    timings["dpo_s"] = time.perf_counter() - t
    say(f"[demo] DPO: {m_dpo['dpo/steps']:.0f} steps ({timings['dpo_s']:.0f} s)")

    ref, tok = load_lm(out / "sft")
    from prefrl.text.model import TextRewardModel

    rm = TextRewardModel.load(out / "reward")
    evals = {}
    for name, path in (("sft", out / "sft"), ("ppo", out / "ppo" / "policy"), ("dpo", out / "dpo" / "policy")):
        lm, _ = load_lm(path)
        evals[name], texts = evaluate_policy(lm, tok, eval_prompts, sample_cfg, seed + 3, watch, ref, rm)
        evals[name]["examples"] = [p + c for p, c in list(zip(eval_prompts, texts))[:3]]
    summary = {"sft": m_sft, "labels": m_lab, "reward": m_rm, "ppo": m_ppo, "dpo": m_dpo, "eval": evals, "timings": timings}
    RunDir(out).write_summary(summary)
    say(f"\n{'model':6s} {'oracle':>8s} {'positive':>9s} {'rm score':>9s} {'KL(ref)':>8s} {'distinct':>9s}")
    for name, e in evals.items():
        say(f"{name:6s} {e['eval/oracle_score']:8.3f} {e['eval/oracle_positive']:9.2f} {e['eval/rm_score']:9.2f} "
            f"{e['eval/kl']:8.2f} {e['eval/distinct']:9.2f}")
        say(f"       e.g. {e['examples'][0]}")
    return summary
