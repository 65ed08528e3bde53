"""`prefrl rate` on tiny InvertedPendulum agents: a pole-pusher, an untrained and a briefly trained agent."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prefrl.cli import main
from prefrl.core.ratings import stored_pools
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError
from tests.control.test_train import TINY_TASK

os.environ.setdefault("MUJOCO_GL", "egl")

TINY = 'name = "tiny-rate"' + TINY_TASK + "[prefs]\nclip_length = 10\n"


@pytest.fixture(scope="module")
def agents(tmp_path_factory) -> dict[str, Path]:
    """Three agents of clearly different quality on one task."""
    root = tmp_path_factory.mktemp("agents")
    preset = root / "tiny.toml"
    preset.write_text(TINY)
    out = {}
    for name, steps in (("untrained", 512), ("trained", 6144)):
        out[name] = root / name
        main(["train", "--task", str(preset), "--reward", "true", "--steps", str(steps), "--run-dir", str(out[name]),
              "--eval-episodes", "0", "--no-video"])
    # a policy that always pushes the cart hard one way: the pole falls within a few steps, every time
    out["pusher"] = root / "pusher"
    shutil.copytree(out["untrained"], out["pusher"])
    ckpt = torch.load(out["pusher"] / "agent.pt", weights_only=True)
    ckpt["policy"]["action_net.weight"].zero_()
    ckpt["policy"]["action_net.bias"].fill_(3.0)
    ckpt["policy"]["log_std"].fill_(-5.0)
    torch.save(ckpt, out["pusher"] / "agent.pt")
    return out


def test_rate_ranks_tiny_agents_and_resumes(agents, tmp_path):
    out = tmp_path / "rate"
    dirs = [str(agents[n]) for n in ("pusher", "trained", "untrained")]
    res = main(["rate", "--run-dirs", *dirs, "--adaptive", "--comparisons", "40", "--clips", "12", "--out", str(out),
                "--bootstrap", "100"])
    assert [p["policy"] for p in res["policies"]] == ["trained", "untrained", "pusher"]
    for name in ("ratings.md", "ratings.json", "ratings.png", "prefs.sqlite"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "ratings.json").read_text())
    assert saved["comparisons"] == 40 and saved["oracle"] == "synthetic"
    low = {p["policy"]: p["ci_low"] for p in saved["policies"]}
    high = {p["policy"]: p["ci_high"] for p in saved["policies"]}
    assert low["trained"] > high["pusher"]
    table = (out / "ratings.md").read_text()
    assert "| 1 | trained |" in table and "90% interval" in table
    with PreferenceStore(out, readonly=True, create=False) as store:
        pools = stored_pools(store)
        assert sorted(pools) == sorted(str(Path(d).resolve()) for d in dirs)
        assert all(len(p) == 12 for p in pools.values())
        first = [j.id for j in store.judgments()]
    # a rerun resumes: same clips, the 40 judgments kept, 20 more asked
    res2 = main(["rate", "--run-dirs", *dirs, "--comparisons", "60", "--clips", "12", "--out", str(out),
                 "--bootstrap", "100"])
    assert res2["comparisons"] == 60
    with PreferenceStore(out, readonly=True, create=False) as store:
        assert stored_pools(store) == pools
        assert [j.id for j in store.judgments()][:40] == first


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--run-dirs", "{trained}", "{missing}"], "no such run directory"),
        (["--run-dirs", "{trained}", "{noagent}"], "no agent to rate"),
        (["--run-dirs", "{trained}", "{notrun}"], "not a prefrl run directory"),
        (["--run-dirs", "{trained}"], "at least two"),
        (["--run-dirs", "{trained}", "{trained}"], "given twice"),
        (["--run-dirs", "{trained}", "{pusher}", "--oracle", "synthetc"], "unknown oracle `synthetc`.*did you mean `synthetic`"),
        (["--run-dirs", "{trained}", "{pusher}", "--oracle", "mistake", "--human"], "not both"),
        (["--run-dirs", "{trained}", "{pusher}", "--comparisons", "0"], "--comparisons"),
        (["--run-dirs", "{trained}", "{pusher}", "--out", "{afile}"], "not a directory"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(agents, tmp_path, flags, match):
    noagent = tmp_path / "noagent"
    shutil.copytree(agents["trained"], noagent, ignore=shutil.ignore_patterns("agent.pt"))
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    names = {**{k: str(v) for k, v in agents.items()}, "missing": str(tmp_path / "missing"), "noagent": str(noagent),
             "notrun": str(notrun), "afile": str(afile)}
    out = tmp_path / "out"
    args = [f.format(**names) for f in flags]
    if "--out" not in args:
        args += ["--out", str(out)]
    with pytest.raises(PrefrlError, match=match):
        main(["rate", *args])
    assert not out.exists()  # nothing ran


def test_human_rating_needs_clips_with_frames(agents, tmp_path):
    out = tmp_path / "scripted"
    dirs = [str(agents["trained"]), str(agents["pusher"])]
    main(["rate", "--run-dirs", *dirs, "--comparisons", "4", "--clips", "3", "--out", str(out), "--bootstrap", "50"])
    with pytest.raises(PrefrlError, match="without frames"):
        main(["rate", "--run-dirs", *dirs, "--human", "--out", str(out)])


def test_agent_clips_differ_in_true_return(agents):
    from prefrl.control.rate import agent_clips

    good = agent_clips(agents["trained"], 10).true_returns()
    bad = agent_clips(agents["pusher"], 10).true_returns()
    assert good.shape == bad.shape == (10,)
    assert np.mean(good) > np.mean(bad)


def test_human_rating_queues_clips_with_frames_and_waits_for_judgments(agents, tmp_path):
    """`--human`: the pairs wait in OUT's store (clips with frames, as `prefrl label --run-dir OUT` needs);
    the command waits until they are judged there, then fits on those judgments."""
    import threading

    out = tmp_path / "human"
    dirs = [str(agents["trained"]), str(agents["pusher"])]
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(main(["rate", "--run-dirs", *dirs, "--human", "--comparisons", "3",
                                                             "--clips", "2", "--out", str(out), "--bootstrap", "50"])))
    t.start()
    judged = 0
    try:
        for _ in range(600):
            if judged == 3 or not t.is_alive():
                break
            if (out / "prefs.sqlite").exists():
                with PreferenceStore(out, create=False) as store:
                    for q in store.pending_queries():
                        clips = store.load_clips([q.left, q.right], frames=True)
                        assert clips.frames is not None and clips.frames.shape[-1] == 3
                        better = int(np.argmax(clips.true_returns()))
                        store.add_judgment(q.left, q.right, 1.0 - better, source="human", annotator="ann", query_id=q.id)
                        judged += 1
            time.sleep(0.2)
    finally:
        t.join(120)
    assert not t.is_alive() and judged == 3
    assert result["comparisons"] == 3 and result["oracle"] == "human"
    with PreferenceStore(out, create=False, readonly=True) as store:
        assert store.get_meta("status") == "finished" and store.count_pending() == 0
        assert {j.annotator for j in store.judgments()} == {"ann"}
