"""`emoji_scenes`: a run's question-answer scenes as a TFDS dataset.

The scenes a VQA run trains and is tested on (`simmim_tf.training.data`,
`data.scenes`) are drawn by a seeded generator from the run's drawings: the
same config gives the same scenes. This builder writes them to disk as a TFDS
dataset, so other models (or another framework) read exactly the scenes this
package evaluates on: splits `train` (the first epoch's scenes; a run draws
new ones every epoch), `validation`, `test` and `test_held_out`.

The builder config is the part of a run config that decides the scenes:
`data.train_artists`, `test_artist`, `held_out_fraction`, `split_seed`,
`scene_grid` and `scenes_per_drawing`, and the tarballs they are drawn from.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pathlib
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from simmim_tf.data.emoji_scenes import ANSWERS, QUESTION_TYPES, SCENE_SIZE
from simmim_tf.training.config import DEFAULT_CONFIG, default_config
from simmim_tf.training.data import SCENE_LABEL, load_splits

SCENE_KEYS = (
    "train_artists",
    "test_artist",
    "held_out_fraction",
    "split_seed",
    "scene_grid",
    "scenes_per_drawing",
)
SPLITS = ("train", "validation", "test", "test_held_out")


@dataclasses.dataclass(eq=False)
class EmojiScenesConfig(tfds.core.BuilderConfig):
    """The scenes of a run config's `data` section (its `SCENE_KEYS`, and
    `manual_dir` / `data_dir` for the drawings)."""

    data: dict = dataclasses.field(
        default_factory=lambda: copy.deepcopy(DEFAULT_CONFIG["data"])
    )


class EmojiScenes(tfds.core.GeneratorBasedBuilder):
    """Scenes of emoji drawings on a white canvas with one question each.

    Features: `image` (128, 128, 3) uint8, a grid of drawings; `question`;
    `answer` (one of `simmim_tf.data.emoji_scenes.ANSWERS`); `question_type`
    (where, exists, count, group).

    Example:

    ```python
    builder = emoji_scenes_builder(default_config()["data"])  # the sample
    test = builder.as_dataset(split="test")
    ```
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    # As EmojiText's: the class's own file, not importlib_resources' guess.
    code_path: ClassVar[epath.Path] = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[1],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(SCENE_SIZE, SCENE_SIZE, 3), dtype=np.uint8
                    ),
                    "question": tfds.features.Text(),
                    "answer": tfds.features.ClassLabel(names=ANSWERS),
                    "question_type": tfds.features.ClassLabel(names=QUESTION_TYPES),
                }
            ),
            supervised_keys=None,
            # In the order the generator draws them, as a run reads them.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                data={key: self.builder_config.data[key] for key in SCENE_KEYS}
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = default_config(data={**self.builder_config.data, "scenes": True})
        scenes, _ = load_splits(config)
        return {split: self._generate_examples(scenes[split]) for split in SPLITS}

    def _generate_examples(self, scenes):
        # One pass: for `train`, the scenes of the first epoch.
        for index, scene in enumerate(scenes.as_numpy_iterator()):
            yield (
                index,
                {
                    "image": scene["image"],
                    "question": scene["text"],
                    "answer": int(scene[SCENE_LABEL]),
                    "question_type": scene["question_type"].decode(),
                },
            )


def scenes_config_name(data: dict) -> str:
    """A name per distinct scene set: a hash of the data section's `SCENE_KEYS`."""
    keys = json.dumps({key: data[key] for key in SCENE_KEYS}, sort_keys=True)
    return "scenes-" + hashlib.sha256(keys.encode()).hexdigest()[:12]


def emoji_scenes_builder(data: dict) -> EmojiScenes:
    """The `emoji_scenes` builder of a run config's `data` section, prepared.

    Prepared once, beside the `emoji_text` data its drawings come from (the
    same `sources-{digest}` folder: other tarballs give other scenes).

    Args:
        data: dict. A run config's `data` section (`manual_dir` None: the
            bundled sample).

    Example:

    ```python
    data = default_config(data={"manual_dir": "~/emoji_npm"})["data"]
    test = emoji_scenes_builder(data).as_dataset(split="test")
    ```
    """
    data = copy.deepcopy(data)
    _, drawings = load_splits(default_config(data={**data, "scenes": False}))
    # {root}/sources-{digest}/emoji_text/{config}/{version}
    root = pathlib.Path(drawings.data_dir).parents[2]
    config = EmojiScenesConfig(name=scenes_config_name(data), data=data)
    builder = EmojiScenes(config=config, data_dir=str(root))
    builder.download_and_prepare()
    return builder
