"""API shapes: what a marketplace sends and what it reads back, and their OpenAPI components.

Input serializers check form fields only; image checks live in `validation.py`, shared with the staff upload form,
and storing is the ingest service's job. Each class's docstring is its component's description in the schema.
"""

from django.conf import settings
from rest_framework import serializers

from moderation.models import (
    APPEAL_TEXT_LIMIT,
    Appeal,
    Decision,
    Event,
    ImageMatch,
    Listing,
    ListingImage,
    ListingStatus,
    Score,
)


class ListingCreateSerializer(serializers.Serializer):
    """A new listing as a multipart form: your unique id for it, optional title and description, and its photos."""

    external_id = serializers.CharField(
        min_length=1,
        max_length=200,
        help_text="Your id for the listing, unique among your listings. Sending it again with the same photos "
        "returns the listing already made (200) instead of an error.",
    )
    title = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        max_length=settings.VIGIA_MAX_IMAGES_PER_LISTING,
        help_text="One or more JPEG, PNG or WebP files (repeat the field).",
    )


class AddImagesSerializer(serializers.Serializer):
    """More photos for an existing listing, as a multipart form."""

    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        max_length=settings.VIGIA_MAX_IMAGES_PER_LISTING,
        help_text="One or more JPEG, PNG or WebP files (repeat the field).",
    )


class ImageStatusSerializer(serializers.ModelSerializer):
    """One photo of a new listing: its id and status (pending until scored, or already routed by a known score)."""

    class Meta:
        model = ListingImage
        fields = ["id", "status"]


class ListingCreatedSerializer(serializers.ModelSerializer):
    """A listing just accepted: its id, your external id, its status and its photos; poll it by id for the outcome."""

    images = ImageStatusSerializer(many=True, read_only=True)

    class Meta:
        model = Listing
        fields = ["id", "external_id", "status", "images"]


class ScoreSerializer(serializers.ModelSerializer):
    """What one model version said about a photo: the probability per label and the most likely prohibited one."""

    class Meta:
        model = Score
        fields = ["model_version", "probabilities", "prohibited_probability", "prohibited_label", "created_at"]


class DecisionSerializer(serializers.ModelSerializer):
    """A decision as the marketplace sees it: the verdict and its reason, not who made it."""

    undone = serializers.SerializerMethodField()
    overturned = serializers.SerializerMethodField()
    via_appeal = serializers.SerializerMethodField()

    class Meta:
        model = Decision
        fields = [
            "outcome",
            "policy_category",
            "model_version",
            "created_at",
            "undone",
            "overturned",
            "via_appeal",
            "automated",
        ]

    def get_overturned(self, decision) -> bool:
        """Whether an appeal overturned this decision."""
        return decision.overturned_at is not None

    def get_via_appeal(self, decision) -> bool:
        """Whether this decision was made on an appeal (an overturn)."""
        return decision.appeal_id is not None

    def get_undone(self, decision) -> bool:
        """True when the moderator took the decision back; it then no longer counts."""
        return decision.undone_at is not None


class MatchSerializer(serializers.ModelSerializer):
    """A hash bank match of a photo: which bank and entry, how far (bits of 256) and what it did."""

    bank = serializers.CharField(source="bank.name")

    class Meta:
        model = ImageMatch
        fields = ["bank", "entry_id", "distance", "action", "applied", "created_at"]


class ImageDetailSerializer(serializers.ModelSerializer):
    """A photo of a listing: its status, the current score and every model version's score, its decisions and its
    hash bank matches."""

    format = serializers.CharField(source="image_format")
    scores = ScoreSerializer(many=True, read_only=True)
    decisions = DecisionSerializer(many=True, read_only=True)
    matches = MatchSerializer(many=True, read_only=True)

    class Meta:
        model = ListingImage
        fields = [
            "id",
            "status",
            "sha256",
            "format",
            "width",
            "height",
            "prohibited_probability",
            "prohibited_label",
            "model_version",
            "attempts",
            "last_error",
            "created_at",
            "scored_at",
            "scores",
            "decisions",
            "matches",
        ]


class AppealCreateSerializer(serializers.Serializer):
    """A seller's appeal of a taken-down listing, as JSON or a form: the seller's statement."""

    text = serializers.CharField(
        min_length=1,
        max_length=APPEAL_TEXT_LIMIT,
        help_text="Why the takedown is wrong, in the seller's words (leading and trailing blanks are dropped).",
    )


class AppealSerializer(serializers.ModelSerializer):
    """An appeal as the marketplace sees it: what it contests, where it stands and, once decided, when and why.

    `note` is the reviewer's statement of reasons, to pass on to the seller. The seller's own text is not sent
    back: you have it already.
    """

    listing_id = serializers.IntegerField(read_only=True)
    contested_image_ids = serializers.SerializerMethodField()

    class Meta:
        model = Appeal
        fields = ["id", "listing_id", "status", "contested_image_ids", "created_at", "decided_at", "note"]
        read_only_fields = fields

    def get_contested_image_ids(self, appeal) -> list[int]:
        """The photos whose confirmations the appeal contests."""
        return sorted(decision.image_id for decision in appeal.contested.all())


class AppealConflictSerializer(serializers.Serializer):
    """A 409 on an appeal: nothing to appeal, the window closed, or already appealed (with that appeal's id)."""

    error = serializers.CharField()
    detail = serializers.CharField()
    appeal_id = serializers.IntegerField(required=False, help_text="With already_appealed: the existing appeal.")
    window_closed_at = serializers.DateTimeField(required=False, help_text="With appeal_window_closed.")


class ListingDetailSerializer(serializers.ModelSerializer):
    """A listing as the marketplace sees it: its status, per image scores and decisions, and its appeals."""

    images = ImageDetailSerializer(many=True, read_only=True)
    appeals = AppealSerializer(many=True, read_only=True)

    class Meta:
        model = Listing
        fields = [
            "id",
            "external_id",
            "title",
            "description",
            "status",
            "created_at",
            "updated_at",
            "images",
            "appeals",
        ]


class ScoreRequestSerializer(serializers.Serializer):
    """One photo to score now, as a multipart form; nothing is stored."""

    image = serializers.FileField(allow_empty_file=True, help_text="One JPEG, PNG or WebP file.")


class ScoreResponseSerializer(serializers.Serializer):
    """The active model's version and its probability for each label of the photo."""

    model_version = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())


class ListingSummarySerializer(serializers.ModelSerializer):
    """A listing in a list: its ids, status and how many photos it has."""

    image_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Listing
        fields = ["id", "external_id", "title", "status", "image_count", "created_at", "updated_at"]


class ListingPageSerializer(serializers.Serializer):
    """One page of your listings, newest first; ask again with `cursor=next_cursor` for the next page."""

    results = ListingSummarySerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Null on the last page.")


class ListingFilterSerializer(serializers.Serializer):
    """The filters of the listing list (query parameters)."""

    external_id = serializers.CharField(required=False, min_length=1, max_length=200)
    status = serializers.ChoiceField(choices=ListingStatus.choices, required=False)
    created_after = serializers.DateTimeField(required=False, help_text="ISO 8601, inclusive.")
    created_before = serializers.DateTimeField(required=False, help_text="ISO 8601, exclusive.")
    cursor = serializers.IntegerField(required=False, min_value=1, help_text="`next_cursor` of the previous page.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class EventSerializer(serializers.ModelSerializer):
    """One event, as webhooks deliver it and the feed returns it.

    `id` is the same on every delivery of the event (the `webhook-id` header): deduplicate on it. `sequence` counts
    a listing's events 1, 2, 3, ... in the order they happened: order by it when events arrive out of order.
    """

    id = serializers.CharField(source="public_id")
    timestamp = serializers.DateTimeField(source="occurred_at")
    client = serializers.CharField(source="client.name")
    listing_id = serializers.IntegerField(allow_null=True)
    cursor = serializers.CharField(source="position", help_text="Feed position: pass as `after` to read on.")

    class Meta:
        model = Event
        fields = ["id", "type", "timestamp", "client", "listing_id", "external_id", "sequence", "cursor", "data"]


class EventPageSerializer(serializers.Serializer):
    """Events after your cursor, oldest first; store `next_cursor` once you have processed them, then ask again."""

    events = EventSerializer(many=True)
    next_cursor = serializers.CharField(help_text="The cursor to ask with next; unchanged when nothing new came.")


class EventFilterSerializer(serializers.Serializer):
    """The event feed's query parameters."""

    after = serializers.IntegerField(required=False, min_value=0, default=0, help_text="Cursor; 0 for the start.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)


class ConflictSerializer(serializers.Serializer):
    """A 409: what conflicts and, for a listing, the id of the one that exists."""

    error = serializers.CharField()
    detail = serializers.CharField()
    listing_id = serializers.IntegerField(required=False)


class ErrorSerializer(serializers.Serializer):
    """Every error the API answers: a stable code to branch on and a sentence for people."""

    error = serializers.CharField(help_text="Machine-readable code, e.g. invalid, not_found, duplicate_external_id.")
    detail = serializers.CharField()


class HealthCheckSerializer(serializers.Serializer):
    """One dependency's check: whether it is fine and, when it is not, why."""

    ok = serializers.BooleanField()
    detail = serializers.CharField(required=False)


class ServingWorkerSerializer(serializers.Serializer):
    """One scoring worker process: the model version it serves and since when, as it last reported."""

    host = serializers.CharField()
    pid = serializers.IntegerField()
    node = serializers.CharField(help_text="The Celery worker's node name.")
    version = serializers.CharField(allow_null=True, help_text="The model version this process serves.")
    since = serializers.DateTimeField(allow_null=True, help_text="When it switched to that version.")
    load_seconds = serializers.FloatField(allow_null=True, help_text="Load and smoke test of that switch.")
    pointer_mtime = serializers.DateTimeField(allow_null=True, help_text="When the version it noticed was activated.")
    failed = serializers.DictField(child=serializers.CharField(), help_text="Versions that would not load, and why.")
    age_seconds = serializers.FloatField(help_text="Seconds since the process last reported.")
    runtime = serializers.CharField(allow_null=True, help_text='What runs the model: "litert" or "keras".')
    runtime_note = serializers.CharField(allow_null=True, help_text="Why Keras serves a version despite LiteRT.")
    rss_mb = serializers.FloatField(allow_null=True, help_text="The process's resident memory in MiB.")


class ServingSerializer(serializers.Serializer):
    """Which model version the scoring processes serve, against the active one, with warnings for operators."""

    active_version = serializers.CharField(allow_null=True)
    versions = serializers.DictField(child=serializers.IntegerField(), help_text="Processes serving each version.")
    as_of_seconds = serializers.FloatField(allow_null=True, help_text="Age of the oldest report.")
    workers = ServingWorkerSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(required=False, help_text="Why the report is unavailable (Redis unreachable).")


class WebhookHealthSerializer(serializers.Serializer):
    """Webhook endpoints by state and the deliveries waiting to be sent; information only, never a 503."""

    enabled = serializers.IntegerField(required=False)
    failing = serializers.IntegerField(required=False, help_text="Enabled, with no success since a failure.")
    disabled = serializers.IntegerField(required=False)
    pending_deliveries = serializers.IntegerField(required=False)
    error = serializers.CharField(required=False, help_text="Why the counts are unavailable.")


class StatusSerializer(serializers.Serializer):
    """All an anonymous probe learns: one word."""

    status = serializers.CharField(help_text='"ok" when every check is ok, else "unavailable".')


class ReadinessSerializer(StatusSerializer):
    """Readiness: the status, and for staff and clients the check of each dependency."""

    database = HealthCheckSerializer(required=False, help_text="Staff and clients only.")
    redis = HealthCheckSerializer(required=False, help_text="Staff and clients only.")
    workers = HealthCheckSerializer(
        required=False, help_text="Scoring processes that reported in the last 30 s. Staff and clients only."
    )
    model = HealthCheckSerializer(required=False, help_text="Staff and clients only.")


class HealthSerializer(ReadinessSerializer):
    """The desk's health: the readiness checks, plus serving and webhooks (all but `status` for staff and clients)."""

    serving = ServingSerializer(
        required=False, help_text="Which model version each scoring worker process serves; information only."
    )
    webhooks = WebhookHealthSerializer(required=False, help_text="Webhook endpoints and pending deliveries.")
