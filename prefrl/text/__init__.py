"""Language-model RLHF on the shared reward-learning core.

A completion is a one-step clip: the text reward model is a ``RewardEnsemble`` of
``transformer`` members (``prefrl.text.model``), fit by the core ``RewardTrainer`` with
the core ``PreferenceLoss``. Oracle-labeled pairs go through the core preference store as
text items (``pipeline.label_samples``), which ``prefrl text reward`` reads like the JSONL
files it exports. Around it: JSONL preference/SFT files (``data``), a
procedurally generated review corpus and a tiny GPT-2 made from scratch (``corpus``,
``lm``), SFT (``sft``), text oracles (``oracles``), PPO with a per-token KL penalty
(``ppo``) and DPO (``dpo``). Commands: ``prefrl text ...`` (``commands``).

Needs the ``text`` extra (``pip install 'prefrl[text]'``). Nothing is downloaded:
models and tokenizers load from local paths only (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os

from prefrl.core.types import PrefrlError


def require_transformers() -> None:
    """Import transformers offline and quietly, or raise a PrefrlError naming the extra."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import tokenizers  # noqa: F401
        import transformers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise PrefrlError(f"the text commands need `transformers` and `tokenizers` ({e}); run `pip install 'prefrl[text]'`") from e
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
