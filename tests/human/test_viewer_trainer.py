"""A trainer process and a viewer process on one store: every judgment reaches the reward model once.

The viewer is a real ``Viewer`` (SDL dummy driver) driven by posted key events
(``python -m prefrl.human.scripted``); the trainer enqueues pairs in batches, polls
judgments between "rollouts" and refits a reward model on each new snapshot, logging
the judgment ids each fit trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


from prefrl.core.store import PreferenceStore

REPO = Path(__file__).resolve().parents[2]

TRAINER = r'''
import json, sys, time
import numpy as np
from prefrl.human.demo import synthetic_clips
from prefrl.core.oracles import HumanOracle
from prefrl.core.store import PreferenceStore
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import RewardModelConfig
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.core.types import Comparisons
from prefrl.core.utils import input_spec_from_clips, set_torch_threads

set_torch_threads(1)
root, budget, log = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "w")
rng = np.random.default_rng(0)
store = PreferenceStore(root)
clips = synthetic_clips(12, length=5, size=(24, 32))
ids = np.array(store.add_clips(clips, keep_frames=True))
store.set_meta("label_budget", budget)
store.set_meta("status", "running")
ens = RewardEnsemble(input_spec_from_clips(clips), RewardModelConfig(hidden=(8,), members=2))
trainer = RewardTrainer(ens, RewardTrainConfig(epochs=2, batch_size=8), rng)
oracle = HumanOracle(store)
asked, trained_on, t_end = 0, [], time.time() + 90
while time.time() < t_end:
    if asked < budget and store.count_pending() < 2:  # the schedule asks for more labels
        k = min(3, budget - asked)
        pairs = np.array([rng.choice(ids, 2, replace=False) for _ in range(k)])
        oracle.ask(pairs, scores=rng.random(k))
        asked += k
    new = oracle.poll()
    js = store.judgments()  # one snapshot: exactly what this fit trains on
    if new or [j.id for j in js] != trained_on:
        pos = {c: i for i, c in enumerate(ids.tolist())}
        comps = Comparisons([pos[j.left] for j in js], [pos[j.right] for j in js],
                            [np.nan if j.label is None else j.label for j in js])
        m = trainer.fit(clips.model_inputs(), comps) if len(comps.labeled()) else {}
        trained_on = [j.id for j in js]
        log.write(json.dumps({"fit": trained_on, "labels": [j.label for j in js],
                              "queries": [j.query_id for j in js], "new": [j.id for j in new],
                              "n_trained": m.get("reward/comparisons")}) + "\n")
        log.flush()
    elif asked >= budget and store.count_pending() == 0:
        break
    time.sleep(0.05)  # a PPO rollout
store.set_meta("status", "finished")
log.write(json.dumps({"finished": True, "asked": asked}) + "\n")
'''


def _env() -> dict[str, str]:
    return dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(REPO), PREFRL_THREADS="1",
                PYGAME_HIDE_SUPPORT_PROMPT="1")


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_trainer_and_viewer_processes_share_one_store(tmp_path):
    run = tmp_path / "run"
    budget = 9
    (tmp_path / "trainer.py").write_text(TRAINER)
    trainer = subprocess.Popen([sys.executable, str(tmp_path / "trainer.py"), str(run), str(budget),
                                str(tmp_path / "fits.jsonl")], env=_env(), stderr=subprocess.PIPE, text=True)
    # the viewer may start before the trainer has made the store: wait for it
    for _ in range(300):
        if (run / "prefs.sqlite").exists() and PreferenceStore(run, create=False).get_meta("status") == "running":
            break
        trainer.poll()
        assert trainer.returncode is None, trainer.stderr.read()
        time.sleep(0.05)
    # keys as a person would press them, with an undo and a re-judgment, then true-return labels until the end
    viewer = subprocess.run(
        [sys.executable, "-m", "prefrl.human.scripted", "--run-dir", str(run), "--annotator", "ann",
         "--keys", "left,right,skip,undo,equal", "--then", "oracle", "--delay-s", "0.02",
         "--log", str(tmp_path / "keys.jsonl"), "--timeout-s", "90"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert viewer.returncode == 0, viewer.stderr
    assert trainer.wait(timeout=60) == 0, trainer.stderr.read()

    keys = _lines(tmp_path / "keys.jsonl")
    assert keys[-1]["done"] and keys[-1]["finished"]  # the viewer left because the run finished
    made = [k["judgment"] for k in keys if "judgment" in k]
    undone = [k["undone"] for k in keys if "undone" in k]
    assert undone == [made[2]]  # the skip was undone ...
    kept = [j for j in made if j not in undone]
    assert kept == keys[-1]["judged"]
    with PreferenceStore(run, create=False) as s:
        js = s.judgments()
    # the store holds exactly the judgments the viewer made and kept: none lost, none twice
    assert [j.id for j in js] == kept and len(kept) == budget
    assert len({j.query_id for j in js}) == budget
    assert all(j.annotator == "ann" and j.source == "human" for j in js)
    undone_query = next(k["undone_query"] for k in keys if "undone" in k)
    assert [j.label for j in js if j.query_id == undone_query] == [0.5]  # ... and re-judged "equal"

    fits = _lines(tmp_path / "fits.jsonl")
    assert fits[-1] == {"finished": True, "asked": budget}
    last = fits[-2]
    # the final reward model was fit on every kept judgment, each once, with the label pressed
    assert last["fit"] == kept
    assert last["labels"] == [j.label for j in js]
    assert last["n_trained"] == sum(j.label is not None for j in js)
    # the trainer's polls saw each judgment once (ids are never reused, even after the undo);
    # the undone one only if it polled before the Backspace
    news = [i for f in fits[:-1] for i in f["new"]]
    assert len(news) == len(set(news)) and set(kept) <= set(news) <= set(made)


# `prefrl train --oracle human` itself, with PreferenceStore.training_data wrapped so that each
# reward-model fit logs the judgment ids it trained on (one snapshot, exactly what the fit saw)
REAL_TRAINER = r'''
import json, sys
from prefrl.cli import main
from prefrl.core.store import PreferenceStore

log = open(sys.argv[1], "w")
orig_training_data, orig_judgments = PreferenceStore.training_data, PreferenceStore.judgments

def training_data(self, *args, **kwargs):
    snap = orig_judgments(self)
    self.judgments = lambda since_id=0: [j for j in snap if j.id > since_id]
    try:
        out = orig_training_data(self, *args, **kwargs)
    finally:
        del self.judgments
    log.write(json.dumps({"fit": [j.id for j in snap], "labels": [j.label for j in snap]}) + "\n")
    log.flush()
    return out

PreferenceStore.training_data = training_data
main(sys.argv[2:])
'''


def test_real_prefrl_train_with_human_oracle_and_viewer(tmp_path):
    run = tmp_path / "run"
    (tmp_path / "trainer.py").write_text(REAL_TRAINER)
    env = dict(_env(), MUJOCO_GL="egl")
    trainer = subprocess.Popen(
        [sys.executable, str(tmp_path / "trainer.py"), str(tmp_path / "fits.jsonl"), "train", "--task", "quick",
         "--oracle", "human", "--labels", "8", "--steps", "2048", "--run-dir", str(run), "--no-video",
         "--eval-episodes", "0"],
        # files, not pipes: nobody reads the trainer's output until it ends, and its progress bar
        # would fill a pipe and block it while the viewer waits for it
        env=env, stdout=(tmp_path / "trainer.out").open("w"), stderr=(tmp_path / "trainer.err").open("w"), text=True)
    for _ in range(1200):  # the store appears once the trainer has started
        if (run / "prefs.sqlite").exists():
            break
        assert trainer.poll() is None, (tmp_path / "trainer.err").read_text()[-3000:]
        time.sleep(0.05)
    viewer = subprocess.run(
        [sys.executable, "-m", "prefrl.human.scripted", "--run-dir", str(run), "--annotator", "ann",
         "--keys", "left,undo,right", "--then", "oracle", "--delay-s", "0.02",
         "--log", str(tmp_path / "keys.jsonl"), "--timeout-s", "150"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    trainer.wait(timeout=120)
    assert trainer.returncode == 0, (tmp_path / "trainer.err").read_text()[-3000:]
    assert viewer.returncode == 0, viewer.stderr[-3000:]
    keys = _lines(tmp_path / "keys.jsonl")
    assert keys[-1]["done"] and keys[-1]["finished"]  # the viewer left when the run finished
    made = [k["judgment"] for k in keys if "judgment" in k]
    kept = keys[-1]["judged"]
    assert [k["undone"] for k in keys if "undone" in k] == [made[0]]
    with PreferenceStore(run, create=False) as s:
        js = s.judgments()
    assert [j.id for j in js] == kept  # none lost, none twice
    assert len({j.query_id for j in js}) == len(js)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == len(kept)
    fits = _lines(tmp_path / "fits.jsonl")
    trained = {i for f in fits for i in f["fit"]}
    last_fit = fits[-1]["fit"]
    by_id = {j.id: j.label for j in js}
    assert all(by_id.get(i, lab) == lab for f in fits for i, lab in zip(f["fit"], f["labels"]))
    # every judgment made before the trainer's last fit reached it, with the label that was pressed
    assert [i for i in kept if i <= max(last_fit)] == last_fit
    # judgments that arrived after the last PPO rollout are fitted once more before the model is saved
    assert sorted(set(kept) - trained) == []
    assert last_fit == kept
