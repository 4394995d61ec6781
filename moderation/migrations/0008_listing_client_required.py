# A listing's client is required from now on, and its external id is unique per client rather than everywhere.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('moderation', '0007_listing_client'),
    ]

    operations = [
        migrations.AlterField(
            model_name='listing',
            name='client',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='listings', to='moderation.client'),
        ),
        migrations.AddIndex(
            model_name='listing',
            index=models.Index(fields=['client', '-created_at', '-id'], name='client_listing_page_idx'),
        ),
        migrations.AddConstraint(
            model_name='listing',
            constraint=models.UniqueConstraint(fields=('client', 'external_id'), name='one_listing_per_client_external_id'),
        ),
    ]
