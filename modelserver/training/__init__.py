"""LoRA fine-tuning core: training data (load, clean, split by question), SFT tokenisation and
batching, and ``train_adapter`` (transformers Trainer + peft).

No Django here; torch / transformers / peft are imported only when training or tokenising runs,
so importing this package (e.g. for ``TrainingConfig`` or the data manifest) is cheap.
"""

from .data import (
    DataError,
    DataManifest,
    Example,
    PreparedData,
    clean_examples,
    load_source,
    prepare_data,
    read_id_file,
    split_by_question,
)
from .plot import plot_loss
from .sft import TrainingConfig, TrainingProgress, TrainingResult, remove_checkpoints, train_adapter

__all__ = [
    "DataError",
    "DataManifest",
    "Example",
    "PreparedData",
    "TrainingConfig",
    "TrainingProgress",
    "TrainingResult",
    "clean_examples",
    "load_source",
    "plot_loss",
    "prepare_data",
    "read_id_file",
    "remove_checkpoints",
    "split_by_question",
    "train_adapter",
]
