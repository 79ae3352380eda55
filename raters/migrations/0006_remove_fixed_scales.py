"""The old fixed columns go, after 0005 copied them."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("raters", "0005_rubric_values_from_columns"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='calibrationanswer',
            name='calibrationanswer_empathy_in_scale',
        ),
        migrations.RemoveConstraint(
            model_name='calibrationanswer',
            name='calibrationanswer_fluency_in_scale',
        ),
        migrations.RemoveConstraint(
            model_name='calibrationitem',
            name='calibrationitem_reference_empathy_in_scale',
        ),
        migrations.RemoveConstraint(
            model_name='calibrationitem',
            name='calibrationitem_reference_fluency_in_scale',
        ),
        migrations.RemoveConstraint(
            model_name='goldanswer',
            name='goldanswer_empathy_in_scale',
        ),
        migrations.RemoveConstraint(
            model_name='goldanswer',
            name='goldanswer_fluency_in_scale',
        ),
        migrations.RemoveField(
            model_name='calibrationanswer',
            name='empathy',
        ),
        migrations.RemoveField(
            model_name='calibrationanswer',
            name='fluency',
        ),
        migrations.RemoveField(
            model_name='calibrationitem',
            name='reference_empathy',
        ),
        migrations.RemoveField(
            model_name='calibrationitem',
            name='reference_fluency',
        ),
        migrations.RemoveField(
            model_name='goldanswer',
            name='empathy',
        ),
        migrations.RemoveField(
            model_name='goldanswer',
            name='fluency',
        ),
    ]
