"""The settings of one training run, checked when made."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from modelserver.inference.params import DEFAULT_SYSTEM_PROMPT, known_fields

from .collate import BATCHING_MODES
from .sources import COUNSELCHAT

# Settings that may differ when resuming (how long to train and how often to look); all other
# settings must match the checkpoint's run, or the resumed run would silently be a different one.
RESUMABLE_FIELDS = frozenset({
    "max_steps", "epochs", "patience", "eval_every", "save_every", "save_total_limit", "eval_on_start",
    "eval_max_examples", "eval_batch_size", "perplexity_max_examples", "device", "threads",
})


@dataclass
class TrainingConfig:
    base: str = "bundled"
    data: str = COUNSELCHAT  # recorded in the result; train_adapter also accepts prepared data
    # LoRA
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    # tokenisation / batching
    max_length: int = 256
    batching: str = "group"  # "none" (random batches), "group" (similar lengths), "pack" (several examples a row)
    padding_side: str = "right"
    train_on: str = "all"  # assistant turns to learn: "all" or the "last"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # evaluation, early stopping, checkpoints
    eval_every: int = 50  # 0: no periodic evaluation (and no early stopping)
    eval_on_start: bool = True  # val loss of the untrained adapter (= base) as the curve's step 0
    eval_max_examples: int | None = 32  # None: all validation examples
    eval_batch_size: int = 8
    patience: int = 0  # evaluations without improvement before stopping; 0: never stop early
    save_every: int | None = None  # default: eval_every (or 50); must be a multiple of eval_every
    save_total_limit: int = 2
    perplexity_max_examples: int | None = 64  # None: all held-out examples; 0: skip perplexity
    # data split (used when train_adapter is given a source rather than prepared data)
    val_fraction: float = 0.1
    exclude_question_ids: list[str] = field(default_factory=list)
    use_source_splits: bool = True
    seed: int = 0
    device: str = "auto"
    # CPU threads; None: every core this process may use.  On a machine shared with other busy
    # processes fewer threads can be faster (OpenMP threads wait on each other when descheduled).
    threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        self.exclude_question_ids = sorted({str(i) for i in self.exclude_question_ids})
        checks = [
            (self.rank >= 1, "rank must be >= 1"),
            (self.alpha > 0, "alpha must be > 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1 (or None to use epochs)"),
            (self.max_steps is not None or self.epochs > 0, "epochs must be > 0"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.batching in BATCHING_MODES, f"batching must be one of {BATCHING_MODES}"),
            (self.padding_side in ("left", "right"), "padding_side must be 'left' or 'right'"),
            (self.train_on in ("all", "last"), "train_on must be 'all' or 'last'"),
            (bool(self.system_prompt and self.system_prompt.strip()), "system_prompt must be non-empty"),
            (self.eval_every >= 0 and self.patience >= 0, "eval_every and patience must be >= 0"),
            (self.patience == 0 or self.eval_every > 0, "patience needs eval_every > 0"),
            (self.save_every is None or self.save_every >= 1, "save_every must be >= 1"),
            (self.save_total_limit >= 1, "save_total_limit must be >= 1"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.eval_every and self.save_every and self.save_every % self.eval_every:
            # The Trainer keeps the best checkpoint only among evaluated ones.
            raise ValueError(f"save_every ({self.save_every}) must be a multiple of eval_every ({self.eval_every})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        return cls(**known_fields(cls, data, "training setting"))
