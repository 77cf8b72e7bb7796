"""Training infrastructure: configs, resumable callbacks, held-out-concept splits."""

from simmim_tf.training.callbacks import AtomicModelCheckpoint as AtomicModelCheckpoint
from simmim_tf.training.callbacks import EpochTimer as EpochTimer
from simmim_tf.training.callbacks import (
    ResumableBackupAndRestore as ResumableBackupAndRestore,
)
from simmim_tf.training.callbacks import (
    ScheduledLearningRate as ScheduledLearningRate,
)
from simmim_tf.training.callbacks import epoch_history as epoch_history
from simmim_tf.training.callbacks import standard_callbacks as standard_callbacks
from simmim_tf.training.config import load_config as load_config
from simmim_tf.training.config import save_config as save_config
from simmim_tf.training.splits import concept_held_out as concept_held_out
from simmim_tf.training.splits import split_by_concept as split_by_concept
