"""API shapes: what a marketplace sends and what it reads back, and their OpenAPI components.

Input serializers check form fields only; image checks live in `validation.py`, shared with the staff upload form,
and storing is the ingest service's job. Each class's docstring is its component's description in the schema.
"""

from django.conf import settings
from rest_framework import serializers

from moderation.models import Decision, Listing, ListingImage, Score


class ListingCreateSerializer(serializers.Serializer):
    """A new listing as a multipart form: your unique id for it, optional title and description, and its photos."""

    external_id = serializers.CharField(max_length=200)
    title = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
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

    class Meta:
        model = Decision
        fields = ["outcome", "policy_category", "model_version", "created_at", "undone"]

    def get_undone(self, decision) -> bool:
        """True when the moderator took the decision back; it then no longer counts."""
        return decision.undone_at is not None


class ImageDetailSerializer(serializers.ModelSerializer):
    """A photo of a listing: its status, the current score and every model version's score, and its decisions."""

    format = serializers.CharField(source="image_format")
    scores = ScoreSerializer(many=True, read_only=True)
    decisions = DecisionSerializer(many=True, read_only=True)

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
        ]


class ListingDetailSerializer(serializers.ModelSerializer):
    """A listing as the marketplace sees it: its status and, per image, scores and decisions."""

    images = ImageDetailSerializer(many=True, read_only=True)

    class Meta:
        model = Listing
        fields = ["id", "external_id", "title", "description", "status", "created_at", "updated_at", "images"]


class ScoreRequestSerializer(serializers.Serializer):
    """One photo to score now, as a multipart form; nothing is stored."""

    image = serializers.FileField(allow_empty_file=True, help_text="One JPEG, PNG or WebP file.")


class ScoreResponseSerializer(serializers.Serializer):
    """The active model's version and its probability for each label of the photo."""

    model_version = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())


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


class ServingSerializer(serializers.Serializer):
    """Which model version the scoring processes serve, against the active one, with warnings for operators."""

    active_version = serializers.CharField(allow_null=True)
    versions = serializers.DictField(child=serializers.IntegerField(), help_text="Processes serving each version.")
    as_of_seconds = serializers.FloatField(allow_null=True, help_text="Age of the oldest report.")
    workers = ServingWorkerSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(required=False, help_text="Why the report is unavailable (Redis unreachable).")


class HealthSerializer(serializers.Serializer):
    """The desk's health: one check each for the database, Redis, workers and the active model, plus serving."""

    status = serializers.CharField(help_text='"ok" when every check is ok, else "unavailable".')
    database = HealthCheckSerializer()
    redis = HealthCheckSerializer()
    workers = HealthCheckSerializer()
    model = HealthCheckSerializer()
    serving = ServingSerializer(
        required=False, help_text="Which model version each scoring worker process serves; information only."
    )
