"""The Celery app of a worker whose GPU is always out of memory: `celery -A tests.integration.oom_worker`.

Test code only. Every batch raises torch's own OutOfMemoryError where decoding would run, so the real
path turns it into a TransientGenerationError and the real retry policy (modelserver.tasks) runs its
course in a real worker process.
"""

import torch

from evalapp.celery import app  # noqa: F401  (the app this worker runs)
from modelserver.inference import generation


def _out_of_memory(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory (tests.integration.oom_worker)")


generation.decode_batch = _out_of_memory
