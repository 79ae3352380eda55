"""The old fixed columns go, after 0007 moved every value into criteria and scores."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("evalapp", "0007_rubric_from_scales"),
        ("raters", "0005_rubric_values_from_columns"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='rating',
            name='rating_empathy_in_scale',
        ),
        migrations.RemoveConstraint(
            model_name='rating',
            name='rating_fluency_in_scale',
        ),
        migrations.RemoveField(
            model_name='rating',
            name='empathy',
        ),
        migrations.RemoveField(
            model_name='rating',
            name='fluency',
        ),
        migrations.RemoveField(
            model_name='study',
            name='scales',
        ),
    ]
