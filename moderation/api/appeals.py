"""Appeals: a seller contests the takedown of one of your listings; another moderator upholds or overturns it.

The outcome comes back as an `appeal.decided` event (and in `GET /api/v1/listings/{id}`); an overturn also brings
`image.decided` and `listing.status_changed`. Refusals that depend on the listing's state (nothing to appeal, the
window closed, already appealed) are 409s, like every other conflict with what the desk already holds; a bad body
is a 400; another client's listing is a 404, exactly like an id that does not exist.
"""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation.api import serializers
from moderation.api.authentication import client_of
from moderation.api.errors import ERRORS, ApiError
from moderation.api.listings import IDEMPOTENCY_KEY, NOT_FOUND, idempotency_key
from moderation.selectors.listings import client_listing
from moderation.services.appeals import (
    AlreadyAppealed,
    AppealError,
    AppealWindowClosed,
    InvalidAppeal,
    file_appeal,
)
from moderation.services.ingest import IdempotencyKeyReused

FILED = {
    "id": 12,
    "listing_id": 7,
    "status": "open",
    "contested_image_ids": [31],
    "created_at": "2026-12-01T08:00:00Z",
    "decided_at": None,
    "note": "",
}
CONFLICT = OpenApiResponse(
    serializers.AppealConflictSerializer,
    description="Nothing to appeal (the listing is not taken down), the appeal window closed, the takedown was "
    "already appealed, or an Idempotency-Key reused for another request",
    examples=[
        OpenApiExample(
            "Already appealed",
            value={
                "error": "already_appealed",
                "detail": "Listing 7's takedown was already appealed (appeal 12, open).",
                "appeal_id": 12,
            },
        ),
        OpenApiExample(
            "Window closed",
            value={
                "error": "appeal_window_closed",
                "detail": "The appeal window of listing 7 closed on 2027-06-02 08:00 UTC.",
                "window_closed_at": "2027-06-02T08:00:00Z",
            },
        ),
        OpenApiExample(
            "Nothing to appeal",
            value={"error": "nothing_to_appeal", "detail": "Listing 7 is live: no takedown to appeal."},
        ),
    ],
)


def _refusal(error: AppealError) -> ApiError:
    if isinstance(error, InvalidAppeal):
        return ApiError(error.code, str(error))
    extra = {}
    if isinstance(error, AlreadyAppealed):
        extra["appeal_id"] = error.appeal.pk
    elif isinstance(error, AppealWindowClosed):
        extra["window_closed_at"] = error.closed_at.isoformat()
    return ApiError(error.code, str(error), status.HTTP_409_CONFLICT, extra=extra)


class ListingAppealsView(APIView):
    """A seller's appeal of one of your listings' takedown."""

    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        operation_id="file_appeal",
        request={
            "application/json": serializers.AppealCreateSerializer,
            "application/x-www-form-urlencoded": serializers.AppealCreateSerializer,
            "multipart/form-data": serializers.AppealCreateSerializer,
        },
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: serializers.AppealSerializer,
            200: OpenApiResponse(serializers.AppealSerializer, description="A retry: the appeal it filed"),
            404: NOT_FOUND,
            409: CONFLICT,
            400: ERRORS[400],
            401: ERRORS[401],
        },
        examples=[
            OpenApiExample(
                "An appeal",
                request_only=True,
                value={"text": "The photo shows a toy replica, which your rules allow."},
            ),
            OpenApiExample("Filed", response_only=True, status_codes=["201"], value=FILED),
        ],
    )
    def post(self, request, listing_id: int):
        """Appeal a taken-down listing (text up to 5,000 characters) within the appeal window; safe to retry.

        The appeal contests the listing's live confirmations that no appeal contests yet, and waits in the desk's
        Appeals queue for a moderator other than the one who decided.
        """
        client = client_of(request)
        listing = client_listing(client=client, listing_id=listing_id)
        form = serializers.AppealCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            filing = file_appeal(
                listing_id=listing.pk,
                client=client,
                text=form.validated_data["text"],
                idempotency_key=idempotency_key(request),
            )
        except AppealError as error:
            raise _refusal(error) from error
        except IdempotencyKeyReused as error:
            raise ApiError("idempotency_key_reused", str(error), status.HTTP_409_CONFLICT) from error
        return Response(
            serializers.AppealSerializer(filing.appeal).data,
            status=status.HTTP_201_CREATED if filing.created else status.HTTP_200_OK,
        )
