from django.db import migrations


class Migration(migrations.Migration):
    """WarmupPrompt now belongs to the gateway app; its table stays (gateway 0001 adopts it)."""

    dependencies = [("cache", "0008_semantic_pair_created_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="WarmupPrompt")],
        )
    ]
