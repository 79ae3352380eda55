"""What every rater service shares: the error it raises and the check of a pair of scores."""

from evalapp.errors import ServiceError
from evalapp.models import SCALE_MAX, SCALE_MIN


class RatingError(ServiceError):
    """A request a rater or researcher made that cannot be carried out; the message says why."""


def check_scores(empathy, fluency) -> None:
    for name, value in (("Empathy", empathy), ("Fluency", fluency)):
        if not isinstance(value, int) or isinstance(value, bool) or not SCALE_MIN <= value <= SCALE_MAX:
            raise RatingError(f"{name} must be a whole number from {SCALE_MIN} to {SCALE_MAX}.")
