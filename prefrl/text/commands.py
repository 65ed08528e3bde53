"""``prefrl text ...`` commands (thin dataclass wrappers over ``prefrl.text.pipeline``).

    prefrl text corpus  --out data/                         # demo review corpus + prompts
    prefrl text sft     --data data/sft.jsonl --out runs/sft  # tiny GPT-2 from scratch (or --model DIR)
    prefrl text label   --policy runs/sft --prompts data/prompts.jsonl --out prefs/train.jsonl --oracle.oracle vader
    prefrl text judge   prefs/ --judge.model models/judge     # an AI judge labels the same pairs (RLAIF)
    prefrl text import  other.jsonl --out prefs2/              # JSONL pairs into a store (for people and the judge)
    prefrl text reward  prefs/train.jsonl --init-from runs/sft --out runs/rm   # + runs/rm/hf (HF export)
    prefrl text reward  prefs/ --init-from runs/sft --out runs/rm  # the same, from the store beside the JSONL
    prefrl text ppo     --policy runs/sft --reward-model runs/rm --prompts data/prompts.jsonl --out runs/ppo
    prefrl text dpo     prefs/train.jsonl --policy runs/sft --out runs/dpo
    prefrl text eval    --policy runs/ppo/policy --ref runs/sft --prompts data/eval_prompts.jsonl --oracle vader
    prefrl text sample / score / export / demo
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tyro

from prefrl.core.monitor import MonitorConfig
from prefrl.core.rundir import RunDir, write_json_atomic
from prefrl.core.trainer import RewardTrainConfig
from prefrl.core.types import PrefrlError
from prefrl.text import require_transformers
from prefrl.text.config import DPOConfig, PPOConfig, SampleConfig, SFTConfig, TinyGPTConfig, text_reward_train
from prefrl.text.data import read_preferences, read_prompts, read_sft, write_jsonl

Positional = tyro.conf.Positional


def _print(title: str, metrics: dict) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")


def _save_config(out: Path, cmd: object) -> None:
    """The command and its settings as the run directory's ``config.json`` (written atomically)."""
    rd = RunDir(out)
    rd.mkdir()
    rd.write_config({"command": type(cmd).__name__, **asdict(cmd)})


@dataclass
class JudgeArgs:
    model: Path | None = None
    """Local Hugging Face causal-LM directory that judges pairs (nothing is downloaded)."""
    principle: str | None = None
    """The written principle the judging prompt starts with (default: prefrl.text.judge.DEFAULT_PRINCIPLE)."""
    on_disagree: str = "skip"
    """When the two orders disagree (position bias): skip (stored, never trained on) or equal (0.5)."""
    batch_size: int = 8
    """Judging prompts per forward pass."""

    def build(self):
        from prefrl.text.judge import DEFAULT_PRINCIPLE, AIJudge

        if self.model is None:
            raise PrefrlError("the `ai` oracle needs `--judge.model DIR` (a local causal language model)")
        return AIJudge.load(self.model, principle=self.principle or DEFAULT_PRINCIPLE, on_disagree=self.on_disagree,
                            batch_size=self.batch_size)


@dataclass
class OracleArgs:
    oracle: str = "vader"
    """Text oracle: vader (sentiment), keyword, length, or ai (a local language model judging pairs: --oracle.judge-model)."""
    teacher: str = "synthetic"
    """Scripted-teacher noise (core oracles): synthetic, stochastic, myopic, mistake, skip, equal."""
    beta: float | None = None
    """Override the teacher's rationality beta (stochastic)."""
    eps_mistake: float | None = None
    """Override the teacher's mistake probability."""
    on: str = "completion"
    """Score the `completion` alone or the `full` prompt + completion."""
    judge: JudgeArgs = field(default_factory=JudgeArgs)
    """The AI judge (with --oracle.oracle ai)."""

    def build(self, seed: int = 0):
        from prefrl.text.oracles import TextOracle

        if self.oracle == "ai":
            return self.judge.build()
        knobs = {k: v for k, v in (("beta", self.beta), ("eps_mistake", self.eps_mistake)) if v is not None}
        return TextOracle(self.oracle, self.teacher, np.random.default_rng(seed), on=self.on, **knobs)


# ---- commands -------------------------------------------------------------------------------
@dataclass
class TextCorpus:
    """Write the demo corpus: review SFT data and prompts ("continue a review positively")."""

    out: Path
    """Output directory (sft.jsonl, prompts.jsonl, eval_prompts.jsonl)."""
    n_sft: int = 6000
    """SFT examples (positive / negative / neutral / mixed reviews)."""
    n_prompts: int = 1000
    """Training prompts for PPO and labeling."""
    n_eval_prompts: int = 256
    """Held-out prompts for evaluation."""
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.pipeline import make_demo_data

        paths = make_demo_data(self.out, self.n_sft, self.n_prompts, self.n_eval_prompts, self.seed)
        print("\n".join(f"{k:14s} -> {v}" for k, v in paths.items()))
        return paths


@dataclass
class TextSFT:
    """Supervised fine-tuning on {"prompt", "completion"} lines (tiny GPT-2 from scratch unless --model)."""

    data: Path
    """SFT JSONL file."""
    out: Path
    """Output model directory (Hugging Face format)."""
    model: Path | None = None
    """Local Hugging Face causal-LM checkpoint to start from; none = a tiny GPT-2 and BPE tokenizer made on the data."""
    tiny: TinyGPTConfig = field(default_factory=TinyGPTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.pipeline import run_sft

        require_transformers()  # the settings go to out/prefrl.json (out/config.json is the model's own)
        m = run_sft(self.data, self.out, self.model, self.tiny, self.sft, self.seed)
        _print(f"SFT model -> {self.out}", m)
        return m


@dataclass
class TextSample:
    """Sample completions from a model (writes {"prompt", "completion"[, "score"]} lines)."""

    policy: Path
    """Model directory."""
    prompts: Path
    """JSONL with a `prompt` per line."""
    out: Path
    """Output JSONL."""
    n: int = 1
    """Completions per prompt."""
    limit: int | None = None
    """Use only the first this-many prompts."""
    oracle: str | None = None
    """Add the score of this text oracle (vader, keyword, length)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0

    def run(self) -> list[dict]:
        from prefrl.text.lm import load_lm, sample_texts
        from prefrl.text.oracles import TextOracle

        lm, tok = load_lm(self.policy)
        prompts = [p for p in read_prompts(self.prompts)[: self.limit] for _ in range(self.n)]
        texts = sample_texts(lm, tok, prompts, self.sample, self.seed)
        rows = [{"prompt": p, "completion": c} for p, c in zip(prompts, texts)]
        if self.oracle:
            scores = TextOracle(self.oracle).score(prompts, texts)
            for r, s in zip(rows, scores.tolist()):
                r["score"] = s
        write_jsonl(self.out, rows)
        print(f"sampled {len(rows)} completions -> {self.out}")
        return rows


@dataclass
class TextLabel:
    """Sample completions and label them with a text oracle (+ scripted-teacher noise) into a preference store and file."""

    policy: Path
    """Model to sample from (usually the SFT model)."""
    prompts: Path
    """JSONL with a `prompt` per line."""
    out: Path
    """Output preference JSONL; the pairs and judgments also go into the preference store beside it (prefs.sqlite)."""
    limit: int | None = None
    """Use only the first this-many prompts (one labeled line per prompt)."""
    format: str = "trl"
    """Output format: trl (prompt/chosen/rejected), vertex (input_text/candidate_0/candidate_1/choice), kwise."""
    k: int = 2
    """Completions sampled per prompt (kwise: ranked; trl/vertex: one pair chosen among them)."""
    reward_model: Path | None = None
    """With k > 2 and an ensemble: pick the pair the members disagree on most."""
    oracle: OracleArgs = field(default_factory=OracleArgs)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.pipeline import label_samples

        if self.oracle.oracle == "ai" and self.format == "kwise":
            raise PrefrlError("the `ai` judge compares pairs; K-wise rankings need a scoring oracle (vader, keyword, length)")
        prompts = read_prompts(self.prompts)[: self.limit]
        m = label_samples(self.policy, prompts, self.out, self.oracle.build(self.seed), self.format, self.k, self.sample,
                          self.seed, self.reward_model)
        _print(f"preferences -> {self.out}", m)
        return m


@dataclass
class TextJudge:
    """Have a local language model (the AI judge) label every text pair already in a preference store.

    Its judgments join the store under the annotator `ai:<model dir>`, on the same pairs as the
    judgments there, so `prefrl prefs stats --run-dir DIR` reports its agreement with the scripted
    oracles and people; `prefrl text reward DIR` then trains on all of them.
    """

    store: Positional[Path]
    """Directory holding the preference store (prefs.sqlite), e.g. where `prefrl text label` wrote."""
    judge: JudgeArgs = field(default_factory=JudgeArgs)
    redo: bool = False
    """Judge again the pairs this judge has judged before (otherwise they are left alone)."""

    def run(self) -> dict:
        from prefrl.core.store import STORE_FILE, PreferenceStore
        from prefrl.text.judge import judge_store

        if not (self.store / STORE_FILE).is_file():
            raise PrefrlError(f"{self.store}: no preference store ({STORE_FILE}) to judge; label pairs first with `prefrl text label`")
        judge = self.judge.build()
        with PreferenceStore(self.store, create=False) as store:
            m = judge_store(store, judge, self.redo)
        _print(f"{judge.annotator} judged {m['judge/judged']:.0f} pairs in {self.store} (`prefrl prefs stats --run-dir "
               f"{self.store}` compares it)", m)
        return m


@dataclass
class TextImport:
    """Put text preference JSONL (TRL or Vertex lines) into a preference store: the pairs become text items
    that people (`prefrl label --dataset DIR`) and the AI judge (`prefrl text judge DIR`) can judge."""

    data: Positional[list[Path]]
    """Preference JSONL files (TRL or Vertex; K-wise rankings stay JSONL-only)."""
    out: Path
    """Directory of the store (prefs.sqlite; created, or added to)."""
    source: str = "import"
    """`source` of the imported judgments (what `prefrl prefs stats` calls them)."""

    def run(self) -> dict:
        from prefrl.core.store import PreferenceStore
        from prefrl.text.data import write_preferences_to_store

        prefs = read_preferences(list(self.data))
        if self.out.exists() and not self.out.is_dir():
            raise PrefrlError(f"{self.out}: is a file; `--out` is the directory the store goes in")
        with PreferenceStore(self.out) as store:
            jids = write_preferences_to_store(prefs, store, source=self.source)
        m = {"import/texts": float(len(prefs)), "import/judgments": float(len(jids))}
        _print(f"{len(jids)} judgments -> {self.out} (label them: `prefrl label --dataset {self.out}`)", m)
        return m


@dataclass
class TextReward:
    """Fit a text reward model (transformer + scalar head) on preference JSONL or a store with the core trainer."""

    data: Positional[list[Path]]
    """Preference JSONL files (TRL, Vertex or K-wise lines, mixed freely) and/or directories holding a preference
    store (prefs.sqlite, e.g. where `prefrl text label` wrote): its text judgments."""
    out: Path
    """Output directory: reward.pt + tokenizer/ + hf/ (Hugging Face export of member 0)."""
    init_from: Path
    """Local Hugging Face checkpoint whose backbone starts each member (usually the SFT model)."""
    members: int = 1
    """Ensemble size (each member on its own bootstrap)."""
    max_length: int | None = None
    """Tokens kept per prompt + completion (default: the model's positions)."""
    eval_data: list[Path] = field(default_factory=list)
    """Held-out preference files to report test accuracy on."""
    train: RewardTrainConfig = field(default_factory=text_reward_train)
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.pipeline import fit_reward

        _save_config(self.out, self)
        _, m = fit_reward(list(self.data), self.out, self.init_from, self.train, self.members, self.max_length, self.seed,
                          list(self.eval_data) or None)
        _print(f"text reward model -> {self.out} (HF export: {self.out / 'hf'})", m)
        return m


@dataclass
class TextPPO:
    """PPO with a per-token KL penalty to the frozen reference, against a text reward model."""

    policy: Path
    """Model to train (usually the SFT model); also the reference unless --ref."""
    prompts: Path
    """Training prompts (JSONL with `prompt`)."""
    out: Path
    """Run directory: policy/ (HF), progress.csv, tb/, summary.json, config.json, value_head.safetensors."""
    reward_model: Path | None = None
    """Text reward model directory (from `prefrl text reward`)."""
    reward_oracle: str | None = None
    """Optimise a text oracle's score directly instead (ablation: vader, keyword, length)."""
    ref: Path | None = None
    """Reference model for the KL penalty (default: the starting policy)."""
    watch_oracle: str | None = "vader"
    """Log this oracle's score of the samples (never used for training); none to disable."""
    ptx_data: Path | None = None
    """SFT JSONL for the pretraining mix (with --ppo.ptx-coef > 0)."""
    normalise_reference: bool = True
    """Re-normalise the reward model so the reference's completions average 0, std 1."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """The reward-hacking monitor (on by default; `--monitor.on-alarm stop` ends PPO at an alarm)."""
    tensorboard: bool = True
    """Write TensorBoard logs to out/tb."""
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.oracles import TextOracle
        from prefrl.text.pipeline import run_ppo

        _save_config(self.out, self)
        m = run_ppo(
            self.policy, read_prompts(self.prompts), self.out, self.ppo, self.sample, self.reward_model,
            TextOracle(self.reward_oracle) if self.reward_oracle else None, self.ref,
            TextOracle(self.watch_oracle) if self.watch_oracle else None, self.ptx_data, self.normalise_reference,
            self.seed, self.tensorboard, self.monitor,
        )
        _print(f"PPO policy -> {self.out / 'policy'}", {k: v for k, v in m.items() if k != "monitor"})
        if "monitor" in m:
            mon = m["monitor"]
            print(f"  monitor: {mon['alarms']} alarm(s), first at step {mon['first_alarm']}, "
                  f"in alarm {mon['alarm_updates']} of {mon['updates']} steps (summary.json: monitor)")
        return m


@dataclass
class TextDPO:
    """Direct preference optimisation on preference JSONL (beta 0.1 by default)."""

    data: Positional[list[Path]]
    """Preference JSONL files (TRL, Vertex or K-wise) and/or preference store directories."""
    policy: Path
    """Model to train (usually the SFT model); also the reference unless --ref."""
    out: Path
    """Run directory: policy/ (HF), progress.csv, tb/, summary.json, config.json."""
    ref: Path | None = None
    """Reference model (default: the starting policy)."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    tensorboard: bool = True
    """Write TensorBoard logs to out/tb."""
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.pipeline import run_dpo

        _save_config(self.out, self)
        m = run_dpo(self.policy, list(self.data), self.out, self.dpo, self.ref, self.seed, self.tensorboard)
        _print(f"DPO policy -> {self.out / 'policy'}", m)
        return m


@dataclass
class TextEval:
    """Evaluate a policy on prompts: oracle score, reward-model score, KL to a reference, diversity."""

    policy: Path
    """Model directory."""
    prompts: Path
    """Held-out prompts (JSONL with `prompt`)."""
    ref: Path | None = None
    """Reference model for the KL (nats per completion)."""
    oracle: str | None = "vader"
    """Text oracle to score with."""
    reward_model: Path | None = None
    """Also report this reward model's mean score."""
    limit: int | None = None
    """Use only the first this-many prompts."""
    out: Path | None = None
    """Write metrics (JSON) and samples (JSONL beside it)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.lm import load_lm
        from prefrl.text.model import TextRewardModel
        from prefrl.text.oracles import TextOracle
        from prefrl.text.pipeline import evaluate_policy

        lm, tok = load_lm(self.policy)
        ref = load_lm(self.ref)[0] if self.ref else None
        prompts = read_prompts(self.prompts)[: self.limit]
        rm = TextRewardModel.load(self.reward_model) if self.reward_model else None
        m, texts = evaluate_policy(lm, tok, prompts, self.sample, self.seed, TextOracle(self.oracle) if self.oracle else None, ref, rm)
        if self.out:
            write_json_atomic(self.out, m)
            write_jsonl(self.out.with_suffix(".samples.jsonl"), [{"prompt": p, "completion": c} for p, c in zip(prompts, texts)])
        _print(f"eval of {self.policy} on {len(prompts)} prompts", m)
        for p, c in list(zip(prompts, texts))[:3]:
            print(f"  | {p}{c}")
        return m


@dataclass
class TextScore:
    """Score text with a reward model: accuracy on a preference file, or scores of {"prompt","completion"} lines."""

    reward_model: Path
    """Text reward model directory."""
    data: Path
    """Preference JSONL or a store directory (-> accuracy, margin), or SFT-style JSONL (-> scores)."""
    out: Path | None = None
    """For SFT-style input: JSONL with a `reward` added to each line."""

    def run(self) -> dict:
        from prefrl.text.data import detect_format
        from prefrl.text.model import TextRewardModel
        from prefrl.text.pipeline import rm_accuracy

        rm = TextRewardModel.load(self.reward_model)
        is_pref = self.data.is_dir()  # a preference store
        if not is_pref:
            with open(self.data, encoding="utf-8") as f:
                first = next((ln for ln in f if ln.strip()), "{}")
            try:
                is_pref = bool(detect_format(json.loads(first), str(self.data)))
            except (PrefrlError, json.JSONDecodeError):
                is_pref = False
        if is_pref:
            m = rm_accuracy(rm, read_preferences(self.data))
            _print(f"reward model on {self.data}", m)
            return m
        ex = read_sft(self.data)
        scores = rm.score([e.prompt for e in ex], [e.completion for e in ex])
        if self.out:
            write_jsonl(self.out, [{"prompt": e.prompt, "completion": e.completion, "reward": float(s)} for e, s in zip(ex, scores)])
        m = {"score/mean": float(scores.mean()), "score/std": float(scores.std()), "score/n": float(len(scores))}
        _print(f"reward model on {self.data}", m)
        return m


@dataclass
class TextExport:
    """Export a text reward model member in Hugging Face format (AutoModelForSequenceClassification + tokenizer)."""

    reward_model: Path
    """Text reward model directory."""
    out: Path
    """Output directory (loads with from_pretrained, as TRL does)."""
    member: int = 0
    """Which ensemble member."""

    def run(self) -> Path:
        from prefrl.text.model import TextRewardModel

        path = TextRewardModel.load(self.reward_model).export_hf(self.out, self.member)
        print(f"exported member {self.member} -> {path}")
        return path


@dataclass
class TextDemo:
    """End to end: corpus -> SFT -> oracle-labeled pairs -> reward model -> PPO and DPO -> evaluation."""

    out: Path
    """Run directory (every step writes a subdirectory)."""
    pairs: int = 4000
    """Oracle-labeled pairs for the reward model and DPO."""
    test_pairs: int = 500
    """Held-out pairs (noiseless oracle) for the reward model's test accuracy."""
    oracle: OracleArgs = field(default_factory=OracleArgs)
    tiny: TinyGPTConfig = field(default_factory=TinyGPTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardTrainConfig = field(default_factory=lambda: text_reward_train(lr=3e-4, val_fraction=0.2))
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    n_sft: int = 6000
    """SFT examples in the made corpus."""
    eval_prompts: int = 256
    """Held-out prompts for the before/after evaluation."""
    seed: int = 0

    def run(self) -> dict:
        from prefrl.text.demo import run_demo

        require_transformers()
        _save_config(self.out, self)
        return run_demo(self.out, self.pairs, self.oracle, self.sft, self.ppo, self.dpo, self.n_sft, self.eval_prompts, self.seed,
                        self.test_pairs, self.tiny, self.reward, self.sample)


COMMANDS: dict[str, type] = {
    "text corpus": TextCorpus,
    "text sft": TextSFT,
    "text sample": TextSample,
    "text label": TextLabel,
    "text judge": TextJudge,
    "text import": TextImport,
    "text reward": TextReward,
    "text score": TextScore,
    "text export": TextExport,
    "text ppo": TextPPO,
    "text dpo": TextDPO,
    "text eval": TextEval,
    "text demo": TextDemo,
}
