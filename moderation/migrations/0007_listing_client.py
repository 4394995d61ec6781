# Listings made before clients existed belong to the desk's own client, as hand uploads do now. A migration of its
# own: PostgreSQL refuses to alter a table in the transaction that updated it under deferred constraint checks.

from django.db import migrations


def assign_listings_to_the_desk_client(apps, schema_editor):
    Client = apps.get_model("moderation", "Client")
    Listing = apps.get_model("moderation", "Listing")
    if Listing.objects.filter(client__isnull=True).exists():
        desk, _ = Client.objects.get_or_create(name="desk", defaults={"description": "Uploads made on the desk."})
        Listing.objects.filter(client__isnull=True).update(client=desk)


class Migration(migrations.Migration):

    dependencies = [
        ('moderation', '0006_marketplace_contract'),
    ]

    operations = [
        migrations.RunPython(assign_listings_to_the_desk_client, migrations.RunPython.noop),
    ]
