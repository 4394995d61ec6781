"""State only: what the desk knows about listings, images, scores, decisions, settings and training.

Business rules live in `services/`; reads in `selectors/`. Every status is a `TextChoices` so the admin, the API
and the database agree on the spelling, and every transition of an image is stamped so SLAs can be measured. One
module a concern; everything is importable from `moderation.models`, where Django looks for an app's models.
"""

from moderation.models.appeals import APPEAL_TEXT_LIMIT, Appeal, AppealStatus
from moderation.models.audit import AuditAction, AuditEntry
from moderation.models.banks import (
    ACTION_STRENGTH,
    BankAction,
    BankEntry,
    BankKind,
    BankState,
    HashBank,
    ImageMatch,
)
from moderation.models.clients import DESK_CLIENT_NAME, Client, ClientKey, IdempotencyRecord
from moderation.models.events import Event, EventRelayState, EventType, OutboxMessage
from moderation.models.listings import ImageStatus, Listing, ListingImage, ListingStatus, Score
from moderation.models.review import Decision, DecisionOutcome, PolicyCategory
from moderation.models.settings import AuditSampling, GateMetric, ModerationSettings
from moderation.models.training import (
    OPEN_RUN_STATUSES,
    ExampleSource,
    ModelVersion,
    TrainingExample,
    TrainingRun,
    TrainingRunStatus,
    TrainingState,
    TrainingTrigger,
)
from moderation.models.webhooks import DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookSecret

__all__ = [
    "ACTION_STRENGTH",
    "BankAction",
    "BankEntry",
    "BankKind",
    "BankState",
    "HashBank",
    "ImageMatch",
    "APPEAL_TEXT_LIMIT",
    "DESK_CLIENT_NAME",
    "OPEN_RUN_STATUSES",
    "Appeal",
    "AuditAction",
    "AuditEntry",
    "AppealStatus",
    "Client",
    "ClientKey",
    "DeliveryAttempt",
    "DeliveryStatus",
    "Event",
    "EventRelayState",
    "EventType",
    "IdempotencyRecord",
    "OutboxMessage",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
    "AuditSampling",
    "Decision",
    "DecisionOutcome",
    "ExampleSource",
    "GateMetric",
    "ImageStatus",
    "Listing",
    "ListingImage",
    "ListingStatus",
    "ModelVersion",
    "ModerationSettings",
    "PolicyCategory",
    "Score",
    "TrainingExample",
    "TrainingRun",
    "TrainingRunStatus",
    "TrainingState",
    "TrainingTrigger",
]
