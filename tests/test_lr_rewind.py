"""Learning-rate rewinding (Renda et al. 2020) is one entry of the strategy table: level k+1
trains level k's final weights under mask m_{k+1} from iteration R with the original
schedule, exactly as a training given those weights would."""
import torch

from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.files import load_checkpoint, load_tensors
from lthfast.imp.driver import ImpRun
from lthfast.pruning import masks as pruning
from lthfast.pruning import strategies
from lthfast.training.trainer import train

# 256 synthetic images, batch 64: 4 steps an epoch; rewind at iteration 2 of 12.
TRAIN = dict(model="resnet8", data="synthetic", train_subset=256, batch_size=64, epochs=3, rewind_iter=2,
             eval_batch_size=256)


def test_lr_rewind_retrains_its_own_previous_solution_from_r_with_the_original_schedule(tmp_path):
    entry = strategies.get("lr-rewind")
    assert (entry.parent, entry.drops, entry.at, entry.lr) == ("own", "smallest", "rewind", "schedule")
    config = ImpConfig(train=TrainConfig(**TRAIN), eval_train_images=256, bn_batches=2)
    data = load_dataset("synthetic", train_subset=256)
    steps = []
    run = ImpRun(config, tmp_path / "root", data, on_iteration=steps.append)
    folders = run.chain("lr-rewind", 2)
    assert steps[-10:] == list(range(3, 13))  # level 2 ran iterations R+1 .. 12 of the schedule
    previous = load_tensors(folders[1] / "final.pt")
    mask = pruning.unpack(load_tensors(folders[2] / "mask.pt"))
    # m_2 drops the smallest of level 1's own surviving weights (not imp's, not theta_0's)
    m1 = pruning.unpack(load_tensors(folders[1] / "mask.pt"))
    expected = pruning.prune_magnitude(previous, m1, pruning.kept_count(m1) - pruning.kept_count(mask))
    assert all(torch.equal(mask[n], expected[n]) for n in mask)
    # the same training, by hand: level 1's final weights under m_2, from iteration R, original schedule
    again = train(run.train_config("lr-rewind", 2), tmp_path / "by-hand", data, mask, previous, start_iteration=2)
    by_hand, stored = load_checkpoint(tmp_path / "by-hand" / "final.pt"), load_tensors(folders[2] / "final.pt")
    assert again["finished"] and all(torch.equal(by_hand[n], stored[n]) for n in stored)
    assert run.train_config("lr-rewind", 2).lr == TRAIN_LR and run.train_config("lr-rewind", 2).milestones is None


TRAIN_LR = TrainConfig().lr  # the recipe's peak rate: no fine-tuning rate


def test_the_paper_recipe_runs_lr_rewind_and_reports_renda_et_al_s_released_values(tmp_path):
    from lthfast.report.markdown import write_report
    from lthfast.study.plan import Study
    from lthfast.study.presets import preset_config

    config = preset_config("paper-resnet20")
    assert "lr-rewind" in config.strategies and "lr-rewind" not in strategies.STUDY_STRATEGIES
    Study(config, tmp_path).save_config()
    published = write_report(tmp_path).read_text().split("## Published reference (not measured here)")[1]
    row = next(line for line in published.splitlines() if "learning-rate rewinding" in line)
    assert all(value in row for value in ("91.69", "91.49", "91.07"))  # lr_finetune, 170 epochs, medians of 3
