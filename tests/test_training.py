"""Training infrastructure: configs, atomic checkpoints, resume, concept splits."""

import json
import os

import simmim_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from simmim_tf.training import (
    AtomicModelCheckpoint,
    EpochTimer,
    ResumableBackupAndRestore,
    ScheduledLearningRate,
    concept_held_out,
    epoch_history,
    load_config,
    save_config,
    split_by_concept,
    standard_callbacks,
)
from simmim_tf.training import config as config_module

DEFAULTS = {"name": "demo", "train": {"epochs": 20, "lr": 1e-3, "sizes": [64]}}

# === Config ===


def write(path, text):
    path.write_text(text)
    return path


def test_load_yaml_deep_merges_over_defaults(tmp_path):
    path = write(tmp_path / "run.yaml", "train:\n  epochs: 3\nextra: {a: 1}\n")
    config = load_config(path, defaults=DEFAULTS)
    assert config == {
        "name": "demo",
        "train": {"epochs": 3, "lr": 1e-3, "sizes": [64]},
        "extra": {"a": 1},
    }
    assert DEFAULTS["train"]["epochs"] == 20  # defaults untouched
    assert load_config(write(tmp_path / "run.yml", "")) == {}


def test_load_json(tmp_path):
    path = write(tmp_path / "run.json", json.dumps({"train": {"lr": 0.5}}))
    assert load_config(str(path), defaults=DEFAULTS)["train"] == {
        "epochs": 20,
        "lr": 0.5,
        "sizes": [64],
    }


def test_overrides_are_typed():
    config = load_config(
        None,
        overrides=[
            "train.epochs=3",
            "train.lr=0.5",
            "train.sizes=[1, 2]",
            "name=my run",
            "train.epochs=4",  # later overrides win
        ],
        defaults=DEFAULTS,
    )
    assert config == {
        "name": "my run",
        "train": {"epochs": 4, "lr": 0.5, "sizes": [1, 2]},
    }
    config = load_config(None, ["a.b=true", "a.c=null", "d=x=y"])
    assert config == {"a": {"b": True, "c": None}, "d": "x=y"}


def test_load_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Config file '.*missing.yaml' does not"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"unknown extension '.toml'.*'.json', '.yaml'"):
        load_config(write(tmp_path / "run.toml", "a = 1"))
    with pytest.raises(ValueError, match=r"Malformed YAML config file '.*bad.yaml': .*"):
        load_config(write(tmp_path / "bad.yaml", "train: [1, 2\n"))
    with pytest.raises(ValueError, match=r"Malformed JSON config file '.*bad.json': Exp"):
        load_config(write(tmp_path / "bad.json", '{"a": }'))
    with pytest.raises(
        ValueError, match=r"must hold a mapping at the top level, not a l"
    ):
        load_config(write(tmp_path / "list.yaml", "- 1\n"))
    with pytest.raises(ValueError, match=r"Override 'train.epochs' must have the form"):
        load_config(None, ["train.epochs"], DEFAULTS)
    with pytest.raises(
        ValueError,
        match=r"unknown config key 'train.epoch'\. Valid keys at train: "
        r"\['epochs', 'lr', 'sizes'\]",
    ):
        load_config(None, ["train.epoch=3"], DEFAULTS)
    with pytest.raises(
        ValueError, match=r"unknown config key 'nme'\. Valid keys at the top level"
    ):
        load_config(None, ["nme=x"], DEFAULTS)
    with pytest.raises(
        ValueError, match=r"Override 'name.first=x': 'name' is a str, not a mapping"
    ):
        load_config(None, ["name.first=x"], DEFAULTS)
    with pytest.raises(ValueError, match=r"empty key in 'train..lr'"):
        load_config(None, ["train..lr=1"], DEFAULTS)
    with pytest.raises(ValueError, match=r"Cannot parse the value of override 'a=\[1'"):
        load_config(None, ["a=[1"])


def test_save_config_round_trip(tmp_path):
    config = {"name": "demo", "train": {"epochs": 3, "lr": 5e-4, "sizes": [1, 2]}}
    path = tmp_path / "run" / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert os.listdir(path.parent) == ["config.yaml"]


def test_save_config_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    save_config({"epochs": 1}, path)
    before = path.read_bytes()

    def dump_half_then_fail(data, stream=None, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(config_module.yaml, "safe_dump", dump_half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_config({"epochs": 2}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        save_config({"epochs": 2}, tmp_path / "new.yaml")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["config.yaml"]
    monkeypatch.undo()
    with pytest.raises(yaml.representer.RepresenterError):
        save_config({"epochs": object()}, path)  # not YAML: same guarantee
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["config.yaml"]


# === Callbacks ===

X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = X @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.optimizer.build(model.trainable_variables)  # so load_weights restores it
    return model


class Recorder(keras.callbacks.Callback):
    """Records epochs begun, batches begun and the weights at each epoch start."""

    def __init__(self):
        super().__init__()
        self.events, self.weights, self.steps = [], {}, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch", epoch))
        self.weights[epoch] = [w.copy() for w in self.model.get_weights()]
        self.steps[epoch] = int(self.model.optimizer.iterations)

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(batch)


class Killer(keras.callbacks.Callback):
    """Raises at the end of one step, as a crash or a kill would."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("killed")


def fit(run_dir, *extra, epochs=4):
    callbacks = standard_callbacks(
        run_dir, backup_save_freq=3, tensorboard=False, patience=None
    )
    return tiny_model().fit(
        X,
        Y,
        batch_size=8,  # 8 steps per epoch
        epochs=epochs,
        validation_data=(X[:16], Y[:16]),
        callbacks=callbacks + list(extra),
        verbose=0,
    )


def backup_state(run_dir):
    with open(run_dir / "backup" / "training_metadata.json") as stream:
        metadata = json.load(stream)
    model = tiny_model()
    model.load_weights(run_dir / "backup" / "latest.weights.h5")
    return metadata, model.get_weights(), int(model.optimizer.iterations)


def test_standard_callbacks(tmp_path):
    callbacks = standard_callbacks(tmp_path)
    assert [type(c) for c in callbacks] == [
        keras.callbacks.TensorBoard,
        EpochTimer,
        keras.callbacks.CSVLogger,
        AtomicModelCheckpoint,
        ResumableBackupAndRestore,
        keras.callbacks.TerminateOnNaN,
        keras.callbacks.EarlyStopping,
    ]
    board, _, log, checkpoint, backup, _, stopping = callbacks
    assert board.log_dir == str(tmp_path / "logs")
    assert log.filename == str(tmp_path / "epochs.csv") and log.append
    assert checkpoint.filepath == str(tmp_path / "checkpoints" / "best.weights.h5")
    assert checkpoint.save_best_only and checkpoint.save_weights_only
    assert isinstance(backup, keras.callbacks.BackupAndRestore)
    assert backup.backup_dir == str(tmp_path / "backup") and backup.delete_checkpoint
    assert stopping.patience == 5 and stopping.restore_best_weights
    assert len(standard_callbacks(tmp_path, patience=None, tensorboard=False)) == 5
    with pytest.raises(ValueError, match=r"Backup save frequency 0 must be 'epoch' or"):
        standard_callbacks(tmp_path, backup_save_freq=0)
    with pytest.raises(ValueError, match=r"Patience -1 must be >= 0 or None"):
        standard_callbacks(tmp_path, patience=-1)


def test_resume_after_interrupt_restarts_the_interrupted_epoch(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path, Killer(epoch=2, step=5))
    # Backups every 3 batches, counted across epochs: batches 3, 6, …, 21 of
    # 22; the last one is after step 4 of epoch 2. Keras records the batch...
    metadata, backup_weights, backup_steps = backup_state(tmp_path)
    assert metadata == {"epoch": 2, "batch": 4}
    assert backup_steps == 21

    recorder = Recorder()
    history = fit(tmp_path, recorder)
    # ... but ignores it: the run restarts epoch 2 at its first step, from the
    # weights (and optimizer state) of the mid-epoch backup.
    assert recorder.events[:2] == [("epoch", 2), 0]
    assert [e for e in recorder.events if isinstance(e, tuple)] == [
        ("epoch", 2),
        ("epoch", 3),
    ]
    assert recorder.events.count(0) == 2  # both epochs run all 8 steps
    assert len(recorder.events) == 2 + 2 * 8
    for restored, saved in zip(recorder.weights[2], backup_weights, strict=True):
        np.testing.assert_array_equal(restored, saved)
    assert recorder.steps == {2: 21, 3: 29}  # optimizer state restored too
    assert history.epoch == [2, 3]  # the 3rd and 4th of 4 epochs
    assert len(history.history["loss"]) == 2
    # The epoch log keeps all four: two from before the kill, two after.
    logged = epoch_history(tmp_path)
    assert len(logged["loss"]) == 4 and len(logged["val_loss"]) == 4
    # What each epoch cost, before the kill and after: 8 steps, more than 0 s.
    assert len(logged["epoch_seconds"]) == 4 and min(logged["epoch_seconds"]) > 0
    np.testing.assert_allclose(logged["loss"][2:], history.history["loss"], rtol=1e-6)
    assert not (tmp_path / "backup").exists()  # deleted when fit completes

    best = tmp_path / "checkpoints" / "best.weights.h5"
    assert sorted(os.listdir(best.parent)) == ["best.weights.h5"]
    model = tiny_model()
    model.load_weights(best)
    assert model.evaluate(X, Y, verbose=0) < tiny_model().evaluate(X, Y, verbose=0)

    # A fresh run in the same folder (no backup to resume) starts a new log.
    fit(tmp_path, epochs=1)
    assert len(epoch_history(tmp_path)["loss"]) == 1


def test_second_interrupt_resumes_at_the_same_epoch(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path, Killer(epoch=2, step=5))
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path, Killer(epoch=2, step=3))
    # Stock Keras 3.15 would record epoch 0 here and restart from scratch.
    assert backup_state(tmp_path)[0] == {"epoch": 2, "batch": 2}
    recorder = Recorder()
    assert fit(tmp_path, recorder).epoch == [2, 3]
    assert recorder.events[:2] == [("epoch", 2), 0]


def test_terminate_on_nan_stops_training(tmp_path):
    labels = Y.copy()
    labels[::2] = np.nan
    model = tiny_model()
    history = model.fit(
        X,
        labels,
        batch_size=8,
        epochs=5,
        callbacks=standard_callbacks(
            tmp_path, monitor="loss", tensorboard=False, patience=None
        ),
        verbose=0,
    )
    assert len(history.history["loss"]) < 5
    assert model.stop_training


@pytest.mark.parametrize(
    "filename, save_method",
    [("best.weights.h5", "save_weights"), ("model.keras", "save")],
)
def test_atomic_checkpoint_keeps_previous_file_when_saving_fails(
    tmp_path, monkeypatch, filename, save_method
):
    path = tmp_path / "checkpoints" / filename
    model = tiny_model()
    checkpoint = AtomicModelCheckpoint(
        path, save_best_only=True, save_weights_only=save_method == "save_weights"
    )
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 1.0})
    before = path.read_bytes()

    def write_half_then_fail(filepath, overwrite=True, **kwargs):
        assert os.path.dirname(filepath) == str(path.parent)  # same filesystem
        with open(filepath, "wb") as stream:
            stream.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(model, save_method, write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.on_epoch_end(1, {"val_loss": 0.5})
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [filename]
    monkeypatch.undo()

    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    checkpoint.on_epoch_end(2, {"val_loss": 0.25})
    assert os.listdir(path.parent) == [filename]
    if save_method == "save":
        reloaded = keras.saving.load_model(path)
    else:
        reloaded = tiny_model()
        reloaded.load_weights(path)
    for a, b in zip(reloaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# === Concept splits ===


def test_concept_held_out_fraction_and_determinism():
    ids = tf.range(4000, dtype=tf.int64)
    held = concept_held_out(ids, fraction=0.2, seed=0).numpy()
    assert held.dtype == bool and held.shape == (4000,)
    assert abs(held.mean() - 0.2) <= 0.03
    np.testing.assert_array_equal(held, concept_held_out(ids, fraction=0.2).numpy())
    # Scalars give the same answer, as inside `Dataset.filter`.
    assert [bool(concept_held_out(tf.constant(i, tf.int64))) for i in range(50)] == list(
        held[:50]
    )
    other_seed = concept_held_out(ids, fraction=0.2, seed=1).numpy()
    assert abs(other_seed.mean() - 0.2) <= 0.03 and (other_seed != held).any()
    assert abs(concept_held_out(ids, fraction=0.5).numpy().mean() - 0.5) <= 0.03


def test_concept_held_out_validates_arguments():
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"fraction {fraction} must be in \(0, 1\)"):
            concept_held_out(tf.constant(1), fraction=fraction)
    with pytest.raises(ValueError, match=r"Seed '1' must be a Python int"):
        concept_held_out(tf.constant(1), seed="1")
    with pytest.raises(ValueError, match=r"integer class ids, got dtype float32"):
        concept_held_out(tf.constant(1.0))


def test_split_by_concept_is_a_partition_by_class():
    labels = np.tile(np.arange(40, dtype=np.int64), 3)  # 3 vendors, 40 emoji
    vendors = np.repeat(np.array([b"apple", b"google", b"twitter"]), 40)
    examples = tf.data.Dataset.from_tensor_slices(
        {"label": labels, "vendor": vendors, "index": np.arange(120)}
    )
    seen, held_out = split_by_concept(examples, fraction=0.3, seed=2)
    seen = list(seen.as_numpy_iterator())
    held_out = list(held_out.as_numpy_iterator())
    seen_index = {int(e["index"]) for e in seen}
    held_index = {int(e["index"]) for e in held_out}
    assert seen_index.isdisjoint(held_index)
    assert seen_index | held_index == set(range(120))
    seen_labels = {int(e["label"]) for e in seen}
    held_labels = {int(e["label"]) for e in held_out}
    assert seen_labels.isdisjoint(held_labels) and held_labels  # whole emoji held out
    assert len(held_out) == 3 * len(held_labels)  # for every vendor
    expected = concept_held_out(tf.range(40, dtype=tf.int64), fraction=0.3, seed=2)
    assert held_labels == set(np.flatnonzero(expected.numpy()).tolist())


def test_split_by_concept_validates_examples():
    pairs = tf.data.Dataset.from_tensor_slices(([1, 2], [3, 4]))
    with pytest.raises(ValueError, match=r"feature dicts with a 'label' feature; got"):
        split_by_concept(pairs)
    batched = tf.data.Dataset.from_tensor_slices({"label": [1, 2]}).batch(2)
    with pytest.raises(ValueError, match=r"scalar per example \(split before batching"):
        split_by_concept(batched)
    with pytest.raises(ValueError, match=r"'subgroup' feature; got \['label'\]"):
        split_by_concept(batched, label_key="subgroup")


def test_scheduled_learning_rate_follows_the_schedule_step_by_step():
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=8, warmup_target=1e-2, warmup_steps=4
    )
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate))

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.AdamW(float(schedule(0))), "mse")
    x, y = np.ones((24, 3), "float32"), np.zeros((24, 1), "float32")
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[ScheduledLearningRate(schedule), Record()],
    )
    # Warm-up to 1e-2 over 4 steps, then cosine decay: rate at step s is schedule(s).
    expected = [float(schedule(step)) for step in range(12)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert max(seen) == pytest.approx(1e-2) and seen[0] == 0.0
    assert int(model.optimizer.iterations) == 12
