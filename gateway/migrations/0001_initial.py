# Adopts the table cache 0009 let go of: state only, the table and its rows stay.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("routing", "0005_asyncjob_cache_controls"),
        ("cache", "0009_warmupprompt_to_gateway"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="WarmupPrompt",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("model", models.CharField(max_length=200)),
                        (
                            "messages",
                            models.JSONField(
                                help_text='e.g. [{"role": "user", "content": "Opening hours?"}]'
                            ),
                        ),
                        (
                            "parameters",
                            models.JSONField(
                                blank=True, default=dict, help_text='e.g. {"temperature": 0}'
                            ),
                        ),
                        ("enabled", models.BooleanField(default=True)),
                        (
                            "last_warmed_at",
                            models.DateTimeField(blank=True, editable=False, null=True),
                        ),
                        (
                            "last_result",
                            models.CharField(
                                blank=True, default="", editable=False, max_length=200
                            ),
                        ),
                        (
                            "service_key",
                            models.ForeignKey(
                                help_text="whose namespace the answer is cached in",
                                on_delete=django.db.models.deletion.CASCADE,
                                to="routing.servicekey",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "cache_warmupprompt",
                    },
                ),
            ],
        ),
    ]
