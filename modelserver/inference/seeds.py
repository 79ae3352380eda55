"""The sampling seed of one response: the one derivation the site and the command line share.

The CLI's run seed and prompt id play the study's run seed and prompt external id, so
``python -m modelserver generate --seed S`` reproduces a study's responses.
"""

import hashlib

# Written into every response's provenance, next to the function it describes, so the two change together.
SEED_DERIVATION = "sha256(f'{run seed}:{prompt external id}:{sample index}')[:8] & (2**63-1); same for every arm"


def request_seed(run_seed: int, prompt_external_id: str, sample_index: int = 0) -> int:
    """Seed for sample ``sample_index`` of a prompt.

    It leaves the arm out on purpose: both arms of a prompt draw from the same seed (common random
    numbers), which makes their comparison less noisy.
    """
    digest = hashlib.sha256(f"{int(run_seed)}:{prompt_external_id}:{int(sample_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
