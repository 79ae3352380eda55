# The distress flag's new defaults: at least 3 reports AND 20 % of the item's readers (raters.welfare.flagged).
# Only the column defaults change: a study whose researcher saved its welfare settings keeps the numbers
# they saved (audited then); a study that never saved them reads the new defaults from the model.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('raters', '0010_merge_0009_panel_0009_welfare'),
    ]

    operations = [
        migrations.AlterField(
            model_name='welfaresettings',
            name='flag_min_reports',
            field=models.PositiveIntegerField(default=3),
        ),
        migrations.AlterField(
            model_name='welfaresettings',
            name='flag_min_percent',
            field=models.PositiveIntegerField(default=20),
        ),
    ]
