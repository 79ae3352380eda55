"""LoRA fine-tuning of a chat model: training data (load, clean, split by question), SFT
tokenisation and batching, and ``train_adapter`` (transformers Trainer + peft).

No Django here; torch / transformers / peft are imported only when training or tokenising runs,
so importing this package (e.g. for ``TrainingConfig`` or the data manifest) is cheap.  Where
things are: ``sources`` (where examples come from), ``cleaning``, ``split`` (by question),
``data`` (all three, and the manifest), ``config``, ``tokens`` (labels), ``collate`` (batches),
``callbacks`` (the Trainer's hooks: meter, progress, early stopping), ``evaluation`` (held-out
loss, perplexity), ``checkpoints`` (resume), ``result``, ``train`` (``train_adapter``), ``plot``,
``cli``.

Why the Trainer and not a plain loop
------------------------------------
It already does what an interrupted CPU run needs -
checkpoints with optimizer, scheduler and RNG state, resuming at the checkpoint's step (skipping
the batches already seen), gradient accumulation with token-weighted loss, best-checkpoint
tracking and early stopping - all tested upstream.  We override only ``evaluate`` (to get a
token-weighted validation loss instead of Trainer's mean of batch means), ``compute_loss`` (to
count real tokens for tokens/s) and ``_get_train_sampler`` (length grouping that also works on
small data sets, see collate.LengthGroupedSampler).

Layout of ``out_dir``::

    adapter_model.safetensors, adapter_config.json   final (best, when evaluated) adapter
    training_result.json                              TrainingResult.to_dict()
    checkpoints/checkpoint-<step>/                    Trainer checkpoints, for resume
    checkpoints/run.json                              settings a resumed run must match
"""

from .checkpoints import remove_checkpoints
from .cleaning import clean_examples
from .config import TrainingConfig
from .data import DataManifest, PreparedData, prepare_data
from .plot import plot_loss
from .result import TrainingProgress, TrainingResult
from .sources import DataError, Example, load_source, read_id_file
from .split import split_by_question
from .train import train_adapter

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
