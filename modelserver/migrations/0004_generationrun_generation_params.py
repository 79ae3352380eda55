from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("modelserver", "0003_playgroundrequest_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="generationrun",
            name="generation_params",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
