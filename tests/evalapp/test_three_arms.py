"""A third arm (a prompt-engineered baseline): every pair of arms is compared, on the page and by the CLI."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from evalapp.results import study_results

from ..factories import ArmFactory, PromptFactory, RatingFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_arms(study):
    arms = [ArmFactory(study=study, label=label) for label in ("baseline", "fine-tuned", "prompted")]
    raters = [UserFactory() for _ in range(2)]
    for p, prompt in enumerate(PromptFactory.create_batch(6, study=study)):
        for a, arm in enumerate(arms):
            response = ResponseFactory(prompt=prompt, arm=arm)
            for r, rater in enumerate(raters):
                RatingFactory(response=response, rater=rater, empathy=3 + 2 * a + (p + r) % 2, fluency=5 + (p % 3))
    return study


def test_every_pair_is_compared_on_the_page(client, researcher, three_arms):
    data = study_results(three_arms, n_boot=50)
    assert set(data["comparisons"]) == {"fine-tuned - baseline", "prompted - baseline", "prompted - fine-tuned"}
    empathy = data["comparisons"]["prompted - baseline"]["scales"]["empathy"]["comparison"]
    assert empathy["mean_diff"] == pytest.approx(4.0)  # 3 + 2a: prompted (a=2) minus baseline (a=0)
    client.force_login(researcher)
    page = client.get(reverse("results", args=[three_arms.id])).content.decode()
    assert page.count("Difference (prompted - fine-tuned)") == 2  # both criteria
    assert 'id="comparison-note"' in page and "not across the pairs" in page


def test_analyze_ratings_takes_a_pair_of_arms_from_the_export(client, researcher, three_arms, tmp_path):
    client.force_login(researcher)
    export = client.get(reverse("export_csv", args=[three_arms.id, "ratings"]))
    path = Path(tmp_path) / "ratings.csv"
    path.write_bytes(b"".join(export.streaming_content))
    with pytest.raises(CommandError, match="choose the two to compare with --arms"):
        call_command("analyze_ratings", str(path), "--n-boot", "20", "--no-mixed")
    with pytest.raises(CommandError, match="not in the file"):
        call_command("analyze_ratings", str(path), "--arms", "baseline,nope")
    out = io.StringIO()
    call_command("analyze_ratings", str(path), "--arms", "baseline,prompted", "--json", "--n-boot", "20",
                 "--no-mixed", stdout=out)
    result = json.loads(out.getvalue())
    assert result["scales"]["empathy"]["comparison"]["mean_diff"] == pytest.approx(4.0)


def test_arms_given_in_order_set_the_contrast(client, researcher, three_arms, tmp_path):
    client.force_login(researcher)
    path = Path(tmp_path) / "ratings.csv"
    path.write_bytes(b"".join(client.get(reverse("export_csv", args=[three_arms.id, "ratings"])).streaming_content))
    out = io.StringIO()
    call_command("analyze_ratings", str(path), "--arms", "prompted,baseline", "--n-boot", "20", "--no-mixed",
                 stdout=out)
    assert "Comparison baseline - prompted" in out.getvalue()  # the second minus the first, as given
