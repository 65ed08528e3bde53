"""Command line: the only reader of argv.

Each command is a dataclass with a ``run()`` method; tyro turns the tree into
subcommands and flags (field docstrings become ``--help`` text). Tests call
``Command(...).run()`` in-process. A ``PrefrlError`` (bad input) is printed on one
line as ``prefrl: error: ...`` with exit code 2 and no traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from prefrl.core.nets import RewardModelConfig
from prefrl.core.trainer import RewardTrainConfig
from prefrl.core.types import PrefrlError
from prefrl.core.utils import set_torch_threads, tune_malloc

Positional = tyro.conf.Positional


# ---- reward --------------------------------------------------------------------------------
@dataclass
class RewardFit:
    """Fit a reward ensemble on a preference dataset (clips.npz + comparisons.jsonl)."""

    dataset: Positional[Path]
    """Dataset directory (clips.npz + comparisons.jsonl; docs/design.md), e.g. the output of `prefrl prefs export`."""
    out: Path
    """Where to write the reward model (.pt, loads with weights_only=True)."""
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    seed: int = 0
    """Seed of bootstraps and initialisation."""

    def run(self) -> dict:
        import torch

        from prefrl.core.dataset import load_dataset
        from prefrl.core.ensemble import RewardEnsemble
        from prefrl.core.trainer import RewardTrainer
        from prefrl.core.utils import input_spec_from_clips

        clips, comps, _ = load_dataset(self.dataset)
        torch.manual_seed(self.seed)
        ens = RewardEnsemble(input_spec_from_clips(clips), self.model)
        trainer = RewardTrainer(ens, self.train, np.random.default_rng(self.seed))
        metrics = trainer.fit(clips.model_inputs(), comps)
        ens.update_normalisation(clips.model_inputs())
        ens.save(self.out, extra={"dataset": str(self.dataset), "metrics": metrics})
        _print_metrics(f"reward model -> {self.out}", metrics)
        return metrics


@dataclass
class RewardScore:
    """Predicted return of each clip in an .npz file (writes an (N,) float32 .npy)."""

    model: Path
    """Reward model written by `prefrl reward fit` or `prefrl train`."""
    clips: Path
    """An .npz with arrays `obs` (N, T, ...) and `acts` (N, T, ...)."""
    out: Path
    """Output .npy file."""

    def run(self) -> np.ndarray:
        from prefrl.core.ensemble import RewardEnsemble
        from prefrl.core.types import Clips

        ens = RewardEnsemble.load(self.model)
        clips = Clips.load_npz(self.clips)
        ens.check_inputs(clips.model_inputs(), str(self.clips))
        rets = ens.predict_clip_returns(clips.model_inputs()).mean(axis=1)
        np.save(self.out, rets)
        print(f"scored {len(rets)} clips -> {self.out}")
        return rets


# ---- prefs ---------------------------------------------------------------------------------
@dataclass
class PrefsExport:
    """Export a run's judgments as a preference dataset (clips.npz + comparisons.jsonl, or preferences.jsonl for text)."""

    run_dir: Path
    """Run directory holding prefs.sqlite (read only: no write access needed)."""
    out: Path
    """Output dataset directory (new or empty, unless --force)."""
    force: bool = False
    """Replace the dataset files in an existing, non-empty --out."""

    def run(self) -> None:
        from prefrl.core.store import STORE_FILE, PreferenceStore

        _check_export_target(self.out, self.force, STORE_FILE)
        with PreferenceStore(self.run_dir, create=False, readonly=True) as store:
            kind = store.judged_kind()
            n_items, n_comps = store.export(self.out)
        what = "text items" if kind == "texts" else "clips"
        print(f"exported {n_comps} comparisons over {n_items} {what} -> {self.out}")


def _check_export_target(out: Path, force: bool, store_file: str) -> None:
    """Refuse to write over a file, or into a non-empty directory without ``force``."""
    if out.is_symlink() and not out.exists():
        raise PrefrlError(f"{out}: a broken symbolic link")
    if not out.exists():
        return
    if not out.is_dir():
        raise PrefrlError(f"{out}: exists and is not a directory")
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as e:
        raise PrefrlError(f"{out}: cannot read the directory ({e.strerror or e})") from e
    if not entries:
        return
    if not force:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise PrefrlError(f"{out}: exists and is not empty ({shown}); pass --force to replace its dataset files")
    if (out / "labels" / store_file).exists():
        raise PrefrlError(
            f"{out}: holds hand labels of the dataset there (labels/{store_file}); replacing the dataset under them "
            "would pair them with other clips: export to another directory, or move labels/ away first"
        )


def _print_metrics(title: str, metrics: dict) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")


# ---- assembly ------------------------------------------------------------------------------
COMMANDS: dict[str, type] = {
    "reward fit": RewardFit,
    "reward score": RewardScore,
    "prefs export": PrefsExport,
}


COMMAND_MODULES = ("prefrl.control.commands", "prefrl.human.commands", "prefrl.text.commands", "prefrl.text.rate")


def _register_part_commands() -> None:
    """Commands defined beside their parts (control, viewer, text).

    Every part ships with prefrl, so an import error here is a bug (or a broken install) and is
    raised as it is: a command never silently vanishes as "unknown command". Optional
    third-party dependencies (transformers for text) are imported inside the commands.
    """
    import importlib

    for mod in COMMAND_MODULES:
        COMMANDS.update(importlib.import_module(mod).COMMANDS)


def _usage() -> str:
    lines = ["usage: prefrl COMMAND [SUBCOMMAND] [OPTIONS]   (prefrl COMMAND --help for options)", "", "commands:"]
    for path, cls in COMMANDS.items():
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        lines.append(f"  {path:16s} {doc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> object:
    """Parse ``argv`` and run the command.

    Command groups (``reward fit``, ``prefs export``) are dispatched here and each
    command's flags are parsed by tyro, so ``prefrl reward fit --help`` shows exactly
    that command's options.
    """
    set_torch_threads()
    tune_malloc()
    _register_part_commands()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return None
    group = argv[0]
    members = {p.partition(" ")[2]: c for p, c in COMMANDS.items() if p.partition(" ")[0] == group}
    if not members:
        import difflib

        groups = sorted({p.partition(" ")[0] for p in COMMANDS})
        close = difflib.get_close_matches(group, groups, n=3)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise PrefrlError(f"unknown command `{group}` (commands: {', '.join(groups)}){hint}")
    if "" in members:  # a single command, e.g. `prefrl train`
        cmd = tyro.cli(members[""], args=argv[1:], prog=f"prefrl {group}")
        return cmd.run()
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(f"usage: prefrl {group} {{{','.join(members)}}} [OPTIONS]")
        for name, cls in members.items():
            print(f"  {name:12s} {(cls.__doc__ or '').strip().splitlines()[0]}")
        return None
    sub = argv[1]
    if sub not in members:
        import difflib

        close = difflib.get_close_matches(sub, list(members), n=3)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise PrefrlError(f"unknown command `{group} {sub}` (known: {', '.join(members)}){hint}")
    cmd = tyro.cli(members[sub], args=argv[2:], prog=f"prefrl {group} {sub}")
    return cmd.run()


def entry() -> None:
    """Run ``main`` as the ``prefrl`` program: bad input is one ``prefrl: error: ...`` line and exit 2.

    Beyond ``PrefrlError`` (what every loader and command raises), two kinds of failure the
    machine rather than the code causes are printed the same way, naming the file: an
    ``OSError`` (a full disk, no permission, a read-only file system) and an SQLite error.
    """
    import sqlite3

    try:
        main()
    except PrefrlError as e:
        _fail(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}")
    except sqlite3.Error as e:
        _fail(f"preference store: {e}")
    except KeyboardInterrupt:
        print("prefrl: interrupted (everything judged so far is saved)", file=sys.stderr)
        sys.exit(130)


def _fail(msg: str) -> None:
    print(f"prefrl: error: {msg.replace(chr(13), ' ').replace(chr(10), ' ')}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    entry()
