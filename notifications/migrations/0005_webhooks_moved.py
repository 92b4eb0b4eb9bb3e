# Agent callbacks and organization webhooks moved to the webhooks app. Only Django's state
# changes: the tables stay as they are, and webhooks.0001_initial takes them over.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0004_organization_events'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='WebhookAttempt'),
                migrations.DeleteModel(name='WebhookMessage'),
                migrations.DeleteModel(name='WebhookEndpoint'),
                migrations.DeleteModel(name='CallbackEndpoint'),
                migrations.DeleteModel(name='AgentWebhookSecret'),
            ],
            database_operations=[],
        ),
    ]
