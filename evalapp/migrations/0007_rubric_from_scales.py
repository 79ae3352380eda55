"""Every study's two scales become two criteria, and every rating's two columns two score rows.

Before 0006 every study had exactly the keys empathy and fluency on 1-10 (validate_scales
enforced it), so the copy is exact; tests/evalapp/test_rubric_migration.py compares every value.
"""

from django.db import migrations

LEGACY_KEYS = ("empathy", "fluency")
LEGACY_NAMES = {"empathy": "Empathy and Support", "fluency": "Fluency and Response Quality"}


def forward(apps, schema_editor):
    Study = apps.get_model("evalapp", "Study")
    Criterion = apps.get_model("evalapp", "Criterion")
    Rating = apps.get_model("evalapp", "Rating")
    Score = apps.get_model("evalapp", "Score")
    for study in Study.objects.all().iterator():
        scales = {s.get("key"): s for s in (study.scales or []) if isinstance(s, dict)}
        criteria = {}
        for position, key in enumerate(LEGACY_KEYS):
            scale = scales.get(key, {})
            criteria[key] = Criterion.objects.create(
                study=study, position=position, key=key, question=scale.get("name") or LEGACY_NAMES[key],
                kind="likert", min_value=1, max_value=10,
                labels={str(k): v for k, v in (scale.get("anchors") or {}).items()}, options=[], not_sure="",
                rationale="none", level="interval")
        ratings = Rating.objects.filter(response__prompt__study=study).values_list("id", "empathy", "fluency")
        batch = []
        for rating_id, empathy, fluency in ratings.iterator(chunk_size=5000):
            for key, value in (("empathy", empathy), ("fluency", fluency)):
                batch.append(Score(rating_id=rating_id, criterion=criteria[key], value=value, not_sure=False,
                                   min_value=1, max_value=10))
            if len(batch) >= 10000:
                Score.objects.bulk_create(batch)
                batch = []
        Score.objects.bulk_create(batch)


def backward(apps, schema_editor):
    """Back to two columns (0008's reversal re-added them): the legacy keys' values, then no criteria."""
    Rating = apps.get_model("evalapp", "Rating")
    Score = apps.get_model("evalapp", "Score")
    Study = apps.get_model("evalapp", "Study")
    Criterion = apps.get_model("evalapp", "Criterion")
    other = Criterion.objects.exclude(key__in=LEGACY_KEYS).values_list("study_id", flat=True).distinct()
    if other:
        raise RuntimeError(f"Cannot migrate back: studies {sorted(other)} have criteria the old two columns can't "
                           "hold; export them first.")
    for rating_id, key, value in Score.objects.filter(criterion__key__in=LEGACY_KEYS).values_list(
            "rating_id", "criterion__key", "value").iterator(chunk_size=5000):
        Rating.objects.filter(id=rating_id).update(**{key: value})
    for study in Study.objects.all():
        study.scales = [{"key": c.key, "name": c.question, "min": 1, "max": 10, "anchors": c.labels}
                        for c in Criterion.objects.filter(study=study, key__in=LEGACY_KEYS).order_by("position")]
        study.save(update_fields=["scales"])
    Score.objects.all().delete()
    Criterion.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("evalapp", "0006_criterion_score"),
    ]

    # Backwards keeps only what the old columns can hold: the legacy rubric's two scales.
    operations = [migrations.RunPython(forward, backward, elidable=False)]
