"""`emoji_scenes`: the TFDS dataset holds exactly the scenes a VQA run reads."""

import numpy as np
import pytest

from simmim_tf.data.emoji_scenes import ANSWERS
from simmim_tf.training.config import default_config
from simmim_tf.training.data import SCENE_LABEL, load_splits
from simmim_tf.training.scene_dataset import SPLITS, emoji_scenes_builder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    return default_config(
        data={"data_dir": str(folder / "tfds"), "scenes_per_drawing": 1}
    )["data"]


def test_the_dataset_holds_the_scenes_a_run_trains_and_is_tested_on(data):
    builder = emoji_scenes_builder(data)
    run, _ = load_splits(default_config(data={**data, "scenes": True}))
    for split in SPLITS:
        stored = list(builder.as_dataset(split=split).as_numpy_iterator())
        drawn = list(run[split].as_numpy_iterator())  # train: its first epoch
        assert len(stored) == len(drawn) > 0, split
        for ours, theirs in zip(stored, drawn, strict=True):
            np.testing.assert_array_equal(ours["image"], theirs["image"])
            assert ours["question"] == theirs["text"]
            assert ANSWERS[ours["answer"]] == ANSWERS[theirs[SCENE_LABEL]]
            names = builder.info.features["question_type"].names
            assert names[ours["question_type"]] == theirs["question_type"].decode()
    # Prepared once: the same config reuses it.
    assert emoji_scenes_builder(data).data_dir == builder.data_dir


def test_other_scene_settings_are_another_dataset(data):
    builder = emoji_scenes_builder(data)
    other = emoji_scenes_builder({**data, "split_seed": 1})
    assert other.data_dir != builder.data_dir
    assert other.info.metadata["data"]["split_seed"] == 1
    first = next(builder.as_dataset(split="test").as_numpy_iterator())
    again = next(other.as_dataset(split="test").as_numpy_iterator())
    assert first["question"] != again["question"] or not np.array_equal(
        first["image"], again["image"]
    )
