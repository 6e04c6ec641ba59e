"""The run folder: everything a trained model is, in safetensors + JSON (nothing is ever unpickled).

``format.py`` names its files and turns tensors into bytes; ``lock.py`` keeps one writer at a time;
``journal.py`` writes checkpoints so that a crash leaves the last good one intact, and reads them without
writing; ``validation.py`` reads each file checked; ``loading.py`` rebuilds a ``Run`` (``load``), and holds the
table through which higher layers teach it other kinds of model (``register_source``); ``training_config.py``
is the typed training recipe that config.json records beside the model and data configs; ``defaults.py`` the
defaults that follow the data (a rule per image size and channels) and their record in config.json.
"""

from aediff.runs.defaults import TRAINING_DEFAULTS, DataDefaults, resolve_data_defaults
from aediff.runs.format import (
    CONFIG_FILE,
    DIGEST_KEY,
    EMA_FILE,
    FORMAT_VERSION,
    LOCK_FILE,
    LOG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    OWN_FILES,
    OWN_FOLDERS,
    PENDING_FILE,
    RESTORE,
    SNAPSHOT_FILE,
    SNAPSHOTS_DIR,
    STATE_DIR,
    STATE_FILE,
    TENSORBOARD_DIR,
    list_snapshots,
    optimizer_from_files,
    optimizer_to_files,
    run_owning,
    snapshot_path,
    tensors_to_bytes,
)
from aediff.runs.journal import fsync_dir, recover, write_files_atomically
from aediff.runs.loading import Run, RunSource, load, median_images_per_second, register_source
from aediff.runs.lock import live_writer, writer_lock
from aediff.runs.training_config import TrainConfig, check_snapshots, snapshot_label
from aediff.runs.validation import (
    TrainingSummary,
    check_checkpoint_consistent,
    check_finite_weights,
    load_weights,
    read_run_config,
    read_tensors,
    read_training_summary,
    write_run_config,
)

__all__ = [
    "CONFIG_FILE",
    "EMA_FILE",
    "FORMAT_VERSION",
    "LOCK_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "OWN_FILES",
    "OWN_FOLDERS",
    "PENDING_FILE",
    "DIGEST_KEY",
    "RESTORE",
    "SNAPSHOTS_DIR",
    "SNAPSHOT_FILE",
    "STATE_DIR",
    "STATE_FILE",
    "TENSORBOARD_DIR",
    "TRAINING_DEFAULTS",
    "DataDefaults",
    "Run",
    "RunSource",
    "TrainConfig",
    "TrainingSummary",
    "check_checkpoint_consistent",
    "check_finite_weights",
    "check_snapshots",
    "fsync_dir",
    "list_snapshots",
    "live_writer",
    "load",
    "load_weights",
    "median_images_per_second",
    "optimizer_from_files",
    "optimizer_to_files",
    "read_run_config",
    "read_tensors",
    "read_training_summary",
    "recover",
    "register_source",
    "resolve_data_defaults",
    "run_owning",
    "snapshot_label",
    "snapshot_path",
    "tensors_to_bytes",
    "write_files_atomically",
    "write_run_config",
    "writer_lock",
]
