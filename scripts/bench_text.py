"""Benchmark of the text RLHF path on the demo task "continue a review positively".

    python scripts/bench_text.py                 # ~6-9 min on 2 busy cores; --quick for ~3.5 min
    python scripts/bench_text.py --no-trl        # skip the TRL side-by-side

Steps (all on CPU, 1 torch thread, nothing downloaded):

1. made review corpus -> tiny GPT-2 (2 layers, 128 wide, byte-level BPE 1024) by SFT;
2. generation throughput of the SFT model (KV cache, batches of 64);
3. pairs of SFT samples labeled by the VADER oracle (noiseless `synthetic` teacher), plus a
   held-out test set on other prompts;
4. reward model (SFT backbone + scalar head) fit by the core RewardTrainer; held-out accuracy
   against the oracle (target >= 95%), overall and by how far apart the oracle scores are;
5. PPO (per-token KL to the SFT model) against the reward model; 6. DPO on the same pairs;
7. oracle score, positive rate, KL to the SFT model and diversity before/after on 256 held-out prompts;
8. where TRL is installed: TRL's RewardTrainer and DPOTrainer on the same tiny model and pairs,
   side by side for speed (TRL >= 1.0 has no PPOTrainer, so PPO has no TRL counterpart).

Writes bench_out/text/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefrl.core.rundir import RunDir  # noqa: E402
from prefrl.core.utils import set_torch_threads  # noqa: E402


def _log(msg: str) -> None:
    print(f"[bench_text {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def generation_throughput(lm, tok, prompts, sample_cfg, batch=64) -> float:
    import torch

    from prefrl.text.lm import sample

    g = torch.Generator().manual_seed(0)
    tokens, t0 = 0, time.perf_counter()
    for s in range(0, len(prompts), batch):
        tokens += sample(lm, tok, prompts[s : s + batch], sample_cfg, g).n_tokens
    return tokens / (time.perf_counter() - t0)


def accuracy_by_gap(scores_fn, prefs, oracle) -> dict[str, float]:
    """RM accuracy on strict test pairs, overall and for pairs whose oracle scores differ by >= 0.05."""
    s = oracle.score(prefs.prompts, prefs.completions)
    c = prefs.comparisons.labeled()
    strict = c.label != 0.5
    r = scores_fn(prefs.prompts, prefs.completions)
    sign = np.where(c.label > 0.5, 1.0, -1.0)
    ok = ((r[c.left] - r[c.right]) * sign > 0)[strict]
    gap = np.abs(s[c.left] - s[c.right])[strict]
    return {"accuracy": float(ok.mean()), "accuracy_gap_ge_0.05": float(ok[gap >= 0.05].mean()),
            "accuracy_gap_lt_0.05": float(ok[gap < 0.05].mean()) if (gap < 0.05).any() else float("nan"),
            "strict_pairs": int(strict.sum()), "pairs_gap_lt_0.05": int((gap < 0.05).sum())}


def trl_loads_export(out: Path, rm_dir: Path, sft: Path, prefs) -> dict:
    """Load the exported reward model the way TRL does (RewardTrainer and GRPOTrainer given its path); compare scores."""
    import warnings

    import datasets
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RewardConfig, RewardTrainer

    from prefrl.text.model import TextRewardModel

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    hf = str(rm_dir / "hf")
    common = dict(report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    rows = [{"prompt": "The soup", "chosen": " was great.", "rejected": " was bad."}] * 4
    tr = RewardTrainer(model=hf, args=RewardConfig(output_dir=str(out / "trl_export_check"), **common), train_dataset=Dataset.from_list(rows))
    model, tok = tr.model.eval(), tr.processing_class
    prompts, comps = prefs.prompts[:256], prefs.completions[:256]
    with torch.no_grad():
        enc = tok([p + c for p, c in zip(prompts, comps)], padding=True, return_tensors="pt")
        trl_scores = model(**enc).logits[:, 0].numpy() + model.config.prefrl_reward_offset
    ours = TextRewardModel.load(rm_dir).score(prompts, comps)
    grpo = GRPOTrainer(model=str(sft), reward_funcs=hf, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts[:8]]),
                       args=GRPOConfig(output_dir=str(out / "trl_export_check"), per_device_train_batch_size=4, num_generations=4,
                                       max_completion_length=16, **common))
    return {"reward_trainer_model": type(model).__name__, "max_abs_score_diff": float(np.abs(trl_scores - ours).max()),
            "grpo_reward_model": type(grpo.reward_funcs[0]).__name__, "completions": len(comps)}


def trl_side_by_side(out: Path, sft: Path, train_file: Path, test, oracle, eval_prompts, sample_cfg, rm_cfg, dpo_cfg, epochs_rm: int) -> dict:
    """TRL's RewardTrainer and DPOTrainer on the same model and pairs (ties and skips dropped: TRL has no soft labels)."""
    import datasets
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer as TRLDPOTrainer
    from trl import RewardConfig, RewardTrainer

    from prefrl.text.lm import load_lm, load_tokenizer

    datasets.disable_progress_bars()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # TRL on transformers 5: gradient_checkpointing renames
    from prefrl.text.pipeline import evaluate_policy

    rows = [json.loads(line) for line in open(train_file)]
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows if "label" not in r]
    tok = load_tokenizer(sft)
    res: dict = {"trl_version": trl.__version__, "pairs": len(rows)}
    common = dict(report_to=[], save_strategy="no", use_cpu=True, logging_steps=50, disable_tqdm=True, dataloader_num_workers=0,
                  seed=0, max_length=96)

    _log(f"TRL {trl.__version__} RewardTrainer: {len(rows)} pairs x {epochs_rm} epochs")
    model = AutoModelForSequenceClassification.from_pretrained(sft, num_labels=1, local_files_only=True)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(output_dir=str(out / "trl_rm"), per_device_train_batch_size=rm_cfg.batch_size, num_train_epochs=epochs_rm,
                        learning_rate=rm_cfg.lr, **common)
    t0 = time.perf_counter()
    tr = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    m = tr.train().metrics
    wall = time.perf_counter() - t0
    model.eval()

    @torch.no_grad()
    def trl_scores(prompts, comps):  # as TRL trained it: prompt + completion + EOS
        out_ = []
        for s in range(0, len(comps), 128):
            enc = tok([p + c + tok.eos_token for p, c in zip(prompts[s : s + 128], comps[s : s + 128])], padding=True,
                      return_tensors="pt", add_special_tokens=False)
            out_.append(model(**enc).logits[:, 0].numpy())
        return np.concatenate(out_)

    res["reward"] = {"train_s": m["train_runtime"], "wall_s": wall, "pairs_per_s": m["train_samples_per_second"],
                     "tokens_per_s": m["num_tokens"] / m["train_runtime"], **accuracy_by_gap(trl_scores, test, oracle)}

    _log(f"TRL DPOTrainer: {len(rows)} pairs x {dpo_cfg.epochs} epochs")
    policy = AutoModelForCausalLM.from_pretrained(sft, local_files_only=True)
    args = TRLDPOConfig(output_dir=str(out / "trl_dpo"), per_device_train_batch_size=dpo_cfg.batch_size, num_train_epochs=dpo_cfg.epochs,
                        learning_rate=dpo_cfg.lr, beta=dpo_cfg.beta, lr_scheduler_type="linear",
                        warmup_steps=int(np.ceil(len(rows) / dpo_cfg.batch_size) * dpo_cfg.epochs * dpo_cfg.warmup), **common)
    t0 = time.perf_counter()
    dt = TRLDPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    m = dt.train().metrics
    wall = time.perf_counter() - t0
    ref, _ = load_lm(sft)
    ev, _ = evaluate_policy(policy.eval(), tok, eval_prompts, sample_cfg, 3, oracle, ref)
    res["dpo"] = {"train_s": m["train_runtime"], "wall_s": wall, "pairs_per_s": m["train_samples_per_second"],
                  "tokens_per_s": m["num_tokens"] / m["train_runtime"], **ev}
    res["ppo"] = "TRL >= 1.0 ships no PPOTrainer (removed from trl.trainer and trl.experimental), so PPO has no TRL counterpart here"
    return res


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/text")
    ap.add_argument("--pairs", type=int, default=4000, help="oracle-labeled training pairs")
    ap.add_argument("--test-pairs", type=int, default=1000, help="held-out pairs (other prompts, noiseless oracle)")
    ap.add_argument("--n-sft", type=int, default=6000)
    ap.add_argument("--ppo-steps", type=int, default=40)
    ap.add_argument("--dpo-epochs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smaller run (~3.5 min): 2000 pairs, 30 PPO steps (RM accuracy ~0.91)")
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.quick:
        a.pairs, a.test_pairs, a.n_sft, a.ppo_steps = 2000, 500, 4000, 30
    set_torch_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from prefrl.core.trainer import RewardTrainConfig
    from prefrl.text import require_transformers
    from prefrl.text.config import DPOConfig, PPOConfig, SampleConfig, SFTConfig, TinyGPTConfig
    from prefrl.text.data import read_preferences, read_prompts
    from prefrl.text.lm import load_lm
    from prefrl.text.model import TextRewardModel
    from prefrl.text.oracles import TextOracle
    from prefrl.text.pipeline import evaluate_policy, fit_reward, label_samples, make_demo_data, run_dpo, run_ppo, run_sft

    require_transformers()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    R: dict = {"args": vars(a)}
    sample_cfg = SampleConfig()
    oracle = TextOracle("vader")

    _log("corpus + SFT")
    data = make_demo_data(out / "data", a.n_sft, a.pairs, 256, a.seed)
    t0 = time.perf_counter()
    R["sft"] = run_sft(data["sft"], out / "sft", None, TinyGPTConfig(), SFTConfig(), a.seed)
    R["sft"]["wall_s"] = time.perf_counter() - t0
    lm, tok = load_lm(out / "sft")
    train_prompts, eval_prompts = read_prompts(data["prompts"]), read_prompts(data["eval_prompts"])
    R["generation_tokens_per_s"] = generation_throughput(lm, tok, eval_prompts * 2, sample_cfg)

    _log(f"labeling {a.pairs} + {a.test_pairs} pairs with VADER")
    t0 = time.perf_counter()
    R["labels"] = label_samples(out / "sft", train_prompts[: a.pairs], out / "prefs" / "train.jsonl", oracle, "trl", 2, sample_cfg, a.seed)
    from prefrl.text.corpus import make_prompts

    label_samples(out / "sft", make_prompts(a.test_pairs, a.seed + 99), out / "test-prefs" / "test.jsonl", oracle, "trl", 2, sample_cfg, a.seed + 99)
    R["labels"]["wall_s"] = time.perf_counter() - t0
    test = read_preferences(out / "test-prefs" / "test.jsonl")

    _log("reward model (core RewardTrainer + PreferenceLoss)")
    rm_cfg = RewardTrainConfig(lr=3e-4, batch_size=32, epochs=10, patience=3, l2=1e-6, noise_eps=0.05, val_fraction=0.2)
    rm, m_rm = fit_reward([out / "prefs" / "train.jsonl"], out / "reward", out / "sft", rm_cfg, seed=a.seed)
    R["reward"] = {**m_rm, **{f"test/{k}": v for k, v in accuracy_by_gap(lambda p, c: rm.score(p, c, normalised=False), test, oracle).items()}}
    _log(f"  held-out accuracy vs oracle {R['reward']['test/accuracy']:.3f} ({m_rm['reward/fit_s']:.0f} s)")

    _log(f"PPO {a.ppo_steps} steps")
    ppo_cfg = PPOConfig(steps=a.ppo_steps)
    R["ppo"] = run_ppo(out / "sft", train_prompts, out / "ppo", ppo_cfg, sample_cfg, reward_model=out / "reward",
                       watch_oracle=oracle, seed=a.seed, tensorboard=False)
    _log("DPO")
    dpo_cfg = DPOConfig(epochs=a.dpo_epochs)
    R["dpo"] = run_dpo(out / "sft", [out / "prefs" / "train.jsonl"], out / "dpo", dpo_cfg, seed=a.seed, tensorboard=False)

    _log("evaluation on 256 held-out prompts")
    rm_eval = TextRewardModel.load(out / "reward")
    R["eval"] = {}
    for name, path in (("sft", out / "sft"), ("ppo", RunDir(out / "ppo").policy), ("dpo", RunDir(out / "dpo").policy)):
        pol, _ = load_lm(path)
        ev, texts = evaluate_policy(pol, tok, eval_prompts, sample_cfg, a.seed + 3, oracle, lm, rm_eval)
        R["eval"][name] = {**ev, "examples": [p + c for p, c in list(zip(eval_prompts, texts))[:4]]}

    (out / "results.json").write_text(json.dumps(R, indent=2, default=str))  # kept if the TRL part fails
    if not a.no_trl:
        try:
            import trl  # noqa: F401
        except ImportError as e:
            R["trl"] = f"not installed ({e}); pip install 'prefrl[trl]'"
        else:
            R["trl_export"] = trl_loads_export(out, out / "reward", out / "sft", test)
            R["trl"] = trl_side_by_side(out, out / "sft", out / "prefs" / "train.jsonl", test, oracle, eval_prompts, sample_cfg,
                                        rm_cfg, dpo_cfg, epochs_rm=3)
    R["wall_s"] = time.perf_counter() - t_all
    (out / "results.json").write_text(json.dumps(R, indent=2, default=str))
    md = report(R)
    (out / "results.md").write_text(md)
    print(md)
    return R


def report(R: dict) -> str:
    e, rw = R["eval"], R["reward"]
    lines = [
        f"Tiny GPT-2: {R['sft']['sft/parameters'] / 1e6:.2f} M parameters; {R['args']['pairs']} VADER-labeled pairs; "
        f"total {R['wall_s'] / 60:.1f} min.",
        "",
        "| reward model (core trainer) | value |",
        "|---|---|",
        f"| held-out accuracy vs oracle ({rw['test/strict_pairs']} strict pairs) | {rw['test/accuracy']:.3f} |",
        f"| ... pairs whose oracle scores differ by >= 0.05 | {rw['test/accuracy_gap_ge_0.05']:.3f} |",
        f"| ... near ties (< 0.05, {rw['test/pairs_gap_lt_0.05']} pairs) | {rw['test/accuracy_gap_lt_0.05']:.3f} |",
        f"| validation accuracy (trainer's held-out 20%) | {rw.get('reward/val/accuracy', float('nan')):.3f} |",
        f"| fit time | {rw['reward/fit_s']:.0f} s |",
        "",
        "| policy (256 held-out prompts) | VADER score | positive rate | RM score | KL to SFT (nats) | distinct |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("SFT (before)", e["sft"]), (f"PPO ({R['args']['ppo_steps']} steps)", e["ppo"]), ("DPO (beta 0.1)", e["dpo"])]
    if isinstance(R.get("trl"), dict):
        rows.append(("TRL DPO (same pairs)", R["trl"]["dpo"]))
    for name, v in rows:
        rm_s = f"{v['eval/rm_score']:.2f}" if "eval/rm_score" in v else "-"
        lines.append(f"| {name} | {v['eval/oracle_score']:.3f} | {v['eval/oracle_positive']:.2f} | {rm_s} | {v['eval/kl']:.2f} | {v['eval/distinct']:.2f} |")
    lines += [
        "",
        "| throughput (tokens/s, 1 thread) | prefrl | TRL |",
        "|---|---|---|",
        f"| generation (sampling, KV cache, batch 64) | {R['generation_tokens_per_s']:.0f} | - |",
        f"| SFT training | {R['sft']['sft/tokens_per_s']:.0f} | - |",
    ]
    trl_r = R.get("trl") if isinstance(R.get("trl"), dict) else None
    lines.append(f"| reward-model training | {rw['reward/train_tokens_per_s']:.0f} | {trl_r['reward']['tokens_per_s']:.0f} |" if trl_r else
                 f"| reward-model training | {rw['reward/train_tokens_per_s']:.0f} | - |")
    lines.append(f"| DPO training (incl. reference) | {R['dpo']['dpo/train_tokens_per_s']:.0f} | {trl_r['dpo']['tokens_per_s']:.0f} |" if trl_r else
                 f"| DPO training (incl. reference) | {R['dpo']['dpo/train_tokens_per_s']:.0f} | - |")
    lines.append(f"| PPO rollouts (generation) / updates | {R['ppo']['ppo/gen_tokens_per_s']:.0f} / {R['ppo']['ppo/train_tokens_per_s']:.0f} | n/a (no PPOTrainer in TRL >= 1.0) |")
    if trl_r:
        lines += ["", f"TRL {trl_r['trl_version']} reward model, same pairs ({trl_r['pairs']} without ties), 3 epochs: held-out accuracy "
                  f"{trl_r['reward']['accuracy']:.3f}."]
    if isinstance(R.get("trl_export"), dict):
        x = R["trl_export"]
        lines += ["", f"The exported reward model (`reward/hf`), loaded by TRL's RewardTrainer from its path as {x['reward_trainer_model']} "
                  f"and by GRPOTrainer as a reward function ({x['grpo_reward_model']}), scores {x['completions']} test completions "
                  f"within {x['max_abs_score_diff']:.1e} of prefrl."]
    elif R.get("trl"):
        lines += ["", f"TRL: {R['trl']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
