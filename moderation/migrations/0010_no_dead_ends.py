# Scoring leases and the backoff of infrastructure errors; the "needs attention" listing status; events for a
# failed image retried or sent to human review.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('moderation', '0009_audit_trail'),
    ]

    operations = [
        migrations.AddField(
            model_name='listingimage',
            name='deferrals',
            field=models.PositiveIntegerField(default=0, help_text='Attempts given back after infrastructure errors since the last score.'),
        ),
        migrations.AddField(
            model_name='listingimage',
            name='next_attempt_at',
            field=models.DateTimeField(blank=True, help_text='After an infrastructure error: not scored again before this time.', null=True),
        ),
        migrations.AddField(
            model_name='listingimage',
            name='scoring_lease_expires_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='listingimage',
            name='scoring_lease_key',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='listingimage',
            name='sent_to_review_at',
            field=models.DateTimeField(blank=True, help_text='When a moderator sent it to human review after scoring failed on it.', null=True),
        ),
        migrations.AlterField(
            model_name='event',
            name='type',
            field=models.CharField(choices=[('image.scored', 'An image was scored and routed'), ('image.rescored', 'A new model routed an open image differently'), ('image.failed', 'An image could not be scored'), ('image.retried', 'A moderator had a failed image scored again'), ('image.sent_to_review', 'A moderator sent a failed image to human review'), ('image.decided', 'A moderator confirmed or rejected an image'), ('decision.undone', 'A moderator took a decision back'), ('listing.status_changed', "A listing's status changed"), ('appeal.received', "A seller's appeal was received"), ('appeal.decided', 'An appeal was upheld or the decision overturned'), ('test', 'A test event sent by an admin')], max_length=40),
        ),
        migrations.AlterField(
            model_name='listing',
            name='status',
            field=models.CharField(choices=[('pending', 'Being scored'), ('needs_attention', 'Needs attention (an image could not be scored)'), ('in_review', 'In review'), ('live', 'Live'), ('taken_down', 'Taken down'), ('withdrawn', 'Withdrawn by the marketplace')], default='pending', max_length=20),
        ),
    ]
