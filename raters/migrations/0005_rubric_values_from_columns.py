"""Calibration references, calibration answers and gold answers move into {criterion key: value}."""

from django.db import migrations


def forward(apps, schema_editor):
    for model, prefix, target in (("CalibrationItem", "reference_", "references"),
                                  ("CalibrationAnswer", "", "values"), ("GoldAnswer", "", "values")):
        Model = apps.get_model("raters", model)
        rows = list(Model.objects.values_list("id", f"{prefix}empathy", f"{prefix}fluency"))
        for row_id, empathy, fluency in rows:
            Model.objects.filter(id=row_id).update(**{target: {"empathy": empathy, "fluency": fluency}})


def backward(apps, schema_editor):
    for model, prefix, source in (("CalibrationItem", "reference_", "references"),
                                  ("CalibrationAnswer", "", "values"), ("GoldAnswer", "", "values")):
        Model = apps.get_model("raters", model)
        for row_id, values in list(Model.objects.values_list("id", source)):
            Model.objects.filter(id=row_id).update(**{f"{prefix}empathy": values.get("empathy") or 1,
                                                      f"{prefix}fluency": values.get("fluency") or 1})


class Migration(migrations.Migration):
    dependencies = [
        ("raters", "0004_rubric_values"),
    ]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
