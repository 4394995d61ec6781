"""The event feed: what webhooks push, for clients that cannot receive them, read a page at a time."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation.api import serializers
from moderation.api.authentication import client_of
from moderation.api.errors import ERRORS
from moderation.selectors.events import event_page

EXAMPLE = {
    "events": [
        {
            "id": "evt_4f0c6a0a0f5b4b8f9d3c2f1e0a9b8c7d",
            "type": "image.scored",
            "timestamp": "2026-12-01T08:00:00Z",
            "client": "acme",
            "listing_id": 7,
            "external_id": "ad-42",
            "sequence": 1,
            "cursor": "1",
            "data": {"image_id": 31, "status": "flagged", "model_version": "v0003", "probabilities": {}},
        }
    ],
    "next_cursor": "1",
}


class EventFeedView(APIView):
    """Your events in the order they were committed, after a cursor; at least once."""

    @extend_schema(
        operation_id="list_events",
        parameters=[serializers.EventFilterSerializer],
        responses={200: serializers.EventPageSerializer, 400: ERRORS[400], 401: ERRORS[401]},
        examples=[OpenApiExample("A page", value=EXAMPLE, response_only=True)],
    )
    def get(self, request):
        """Return your events after `after` (a cursor from the previous page; 0 for the start), oldest first."""
        query = serializers.EventFilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = event_page(client=client_of(request), **query.validated_data)
        return Response(
            {"events": serializers.EventSerializer(page.events, many=True).data, "next_cursor": page.next_cursor}
        )
