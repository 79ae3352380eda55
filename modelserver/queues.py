"""Queue names. Generation and training hold a model in memory: they run on `gpu` workers only."""

GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "celery"
