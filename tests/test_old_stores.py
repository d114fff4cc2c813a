"""Stores written by earlier versions of lthfast open, and nothing stored is computed again:
store_v0 (written before the store module) and store_v1 (the last flat layout of the
package, a smoke study with every strategy, both rewind points and every analysis; its
provenance is in tests/fixtures/README.md)."""
import shutil
from pathlib import Path

import pytest

from lthfast.data.loading import load_dataset
from lthfast.imp.driver import ImpRun
from lthfast.pruning import strategies
from lthfast.report.markdown import write_report
from lthfast.store import layout as store
from lthfast.store.layout import load_study_config
from lthfast.study.plan import Study

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def legacy(tmp_path):
    """A run store written by lthfast before the store module (tests/fixtures/store_v0)."""
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "store_v0", root)
    return root


def test_a_store_of_the_previous_layout_opens_and_nothing_is_recomputed(legacy):
    config = load_study_config(legacy)
    jobs = Study(config, legacy).plan()
    assert len(jobs) == 16  # 15, and the one-parent job at level 1 (newer than the store)
    # Every training and analysis is found, but sharpness: its power iteration was replaced by
    # Lanczos, so its stored results have other settings and are computed again; and one-parent,
    # an analysis newer than the store (no training, a few evaluations), is computed for the first time;
    # and the sublevel tables, whose eps rule changed (eps from the dense network; they read records only).
    assert [job.key for job in jobs if not job.done()] == \
        [job.key for job in jobs if job.kind in ("one-parent", "sharpness", "sublevel")] != []
    run = store.Run.open(next(legacy.glob("imp_*")))
    assert run.levels("imp") == [0, 1] and run.levels("finetune") == [0, 1]
    assert run.solution("finetune:1:baseline").weights.exists()
    assert "finetune" in store.Store(legacy).summary_table()
    results = write_report(legacy).parent / "results.json"
    assert results.exists() and '"verdict"' in results.read_text()


def test_a_new_strategy_is_one_table_entry(legacy, monkeypatch):
    """Random reinitialization of imp's mask trained from the late rewind point: one entry."""
    entry = strategies.Strategy("reinit-late", "imp", "imp-mask", strategies.fresh_init, "rewind", "schedule",
                                "imp's mask m_k, a fresh initialization, trained from the rewind point")
    monkeypatch.setitem(strategies.STRATEGIES, "reinit-late", entry)
    config, steps = load_study_config(legacy), []
    imp_run = ImpRun(config.imp_config(0, config.rewind_iter), legacy, load_dataset("synthetic", train_subset=64),
                     on_iteration=steps.append)
    imp_run.level("reinit-late", 1)
    run = store.Run.open(imp_run.dir)
    assert run.levels("reinit-late") == [0, 1]
    new, imp = run.solution("reinit-late:1").load(), run.solution("imp:1").load()
    assert all((new[1][n] == imp[1][n]).all() for n in imp[1])  # imp's mask m_1
    assert steps == [2]  # trained from the rewind point (iteration 1) to the end (iteration 2) only


def test_a_store_of_the_flat_layout_opens_and_nothing_is_recomputed(tmp_path):
    root = tmp_path / "flat"
    shutil.copytree(FIXTURES / "store_v1", root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    config = load_study_config(root)
    jobs = Study(config, root).plan()
    assert len(jobs) == 24  # 23, and the one-parent job at level 1 (newer than the store)
    # Nothing stored is computed again; one-parent, an analysis newer than the store (no
    # training, a few evaluations), and the sublevel tables, whose eps rule changed (eps from the
    # dense network; they read the level records only), are the jobs to run.
    assert sorted(job.key for job in jobs if not job.done()) == ["seed0/R0/sublevel", "seed0/R1/one-parent imp:0",
                                                                 "seed0/R1/sublevel"]
    assert {job.kind for job in jobs} == {"train", "share", "interpolate", "distance", "prune-path", "volume",
                                          "sharpness", "sublevel", "one-parent"}
    run = store.Run.open(root / "imp_b07083bfec37")
    assert all(run.levels(s) == [0, 1] for s in config.strategies)
    results = write_report(root).parent / "results.json"
    assert results.exists() and '"verdict"' in results.read_text()
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "report" not in p.relative_to(root).parts}
    assert after == before  # the report reads the store; nothing in it was rewritten
