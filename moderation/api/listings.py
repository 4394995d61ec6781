"""Listings: send one (safe to retry), list and find yours, read one's fate, add photos, withdraw it.

Every view works within the caller's client (`authentication.client_of`): another client's listing answers 404,
exactly like an id that does not exist, so ids cannot be probed. Views are thin: a serializer checks the fields,
one service or selector call does the work.
"""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation.api import serializers
from moderation.api.authentication import client_of
from moderation.api.errors import ERRORS, STORAGE_ERRORS, ApiError
from moderation.models import Listing
from moderation.selectors.listings import client_listing, get_listing_detail, listing_page
from moderation.services.ingest import (
    DuplicateListing,
    IdempotencyKeyReused,
    ListingWithdrawn,
    add_images,
    create_listing,
)
from moderation.services.listings import withdraw_listing

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (a UUID): a request repeated with the same key is answered as the first one was, "
    "without doing it twice; the same key with a different request is a 409.",
)
CONFLICT = OpenApiResponse(
    serializers.ConflictSerializer,
    description="external_id already used with other photos, or an Idempotency-Key reused for another request",
    examples=[
        OpenApiExample(
            "Duplicate external id",
            value={
                "error": "duplicate_external_id",
                "detail": "A listing with external_id 'ad-42' already exists (id 7) with other photos.",
                "listing_id": 7,
            },
        )
    ],
)
NOT_FOUND = OpenApiResponse(serializers.ErrorSerializer, description="No such listing among yours")


def idempotency_key(request) -> str | None:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 200:
        raise ApiError("invalid", "Idempotency-Key is at most 200 characters.")
    return key or None


def _conflict(error: Exception) -> ApiError:
    if isinstance(error, DuplicateListing):
        return ApiError("duplicate_external_id", str(error), 409, extra={"listing_id": error.listing.pk})
    return ApiError("idempotency_key_reused", str(error), 409)


class ListingCollectionView(APIView):
    """Your listings: send a new one (POST) or list and find them (GET)."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="create_listing",
        request={"multipart/form-data": serializers.ListingCreateSerializer},
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: serializers.ListingCreatedSerializer,
            200: OpenApiResponse(serializers.ListingCreatedSerializer, description="A retry: the listing it made"),
            409: CONFLICT,
            **ERRORS,
            **STORAGE_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Created",
                response_only=True,
                status_codes=["201"],
                value={
                    "id": 7,
                    "external_id": "ad-42",
                    "status": "pending",
                    "images": [{"id": 31, "status": "pending"}],
                },
            )
        ],
    )
    def post(self, request):
        """Store a listing and its photos, all or none, and queue the photos for scoring; safe to retry."""
        form = serializers.ListingCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            intake = create_listing(
                client=client_of(request),
                external_id=data["external_id"],
                title=data["title"],
                description=data["description"],
                files=data["images"],
                submitted_by=request.user,
                idempotency_key=idempotency_key(request),
            )
        except (DuplicateListing, IdempotencyKeyReused) as error:
            raise _conflict(error) from error
        return Response(
            serializers.ListingCreatedSerializer(intake.listing).data,
            status=status.HTTP_201_CREATED if intake.created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="list_listings",
        parameters=[serializers.ListingFilterSerializer],
        responses={200: serializers.ListingPageSerializer, 400: ERRORS[400], 401: ERRORS[401]},
    )
    def get(self, request):
        """Your listings, newest first, by `external_id`, status or creation time, a page at a time."""
        query = serializers.ListingFilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = listing_page(client=client_of(request), **query.validated_data)
        return Response(
            {
                "results": serializers.ListingSummarySerializer(page.listings, many=True).data,
                "next_cursor": page.next_cursor,
            }
        )


class ListingDetailView(APIView):
    """One of your listings: read its fate (GET) or withdraw it (DELETE)."""

    @extend_schema(
        operation_id="get_listing",
        responses={200: serializers.ListingDetailSerializer, 404: NOT_FOUND, 401: ERRORS[401]},
    )
    def get(self, request, listing_id: int):
        """Return a listing's status and, for each image, its status, scores (with model version) and decisions."""
        listing = get_listing_detail(client=client_of(request), listing_id=listing_id)
        return Response(serializers.ListingDetailSerializer(listing).data)

    @extend_schema(
        operation_id="withdraw_listing",
        responses={200: serializers.ListingDetailSerializer, 404: NOT_FOUND, 401: ERRORS[401]},
    )
    def delete(self, request, listing_id: int):
        """Withdraw a listing (it left your site): its photos leave the queue; decisions made are kept."""
        listing = client_listing(client=client_of(request), listing_id=listing_id)
        withdraw_listing(listing_id=listing.pk)
        return Response(
            serializers.ListingDetailSerializer(get_listing_detail(client=listing.client, listing_id=listing.pk)).data
        )


class ListingImagesView(APIView):
    """More photos for one of your listings."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="add_listing_images",
        request={"multipart/form-data": serializers.AddImagesSerializer},
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: serializers.ListingCreatedSerializer,
            200: OpenApiResponse(serializers.ListingCreatedSerializer, description="A retry: nothing added again"),
            404: NOT_FOUND,
            409: OpenApiResponse(serializers.ErrorSerializer, description="The listing was withdrawn"),
            **ERRORS,
            **STORAGE_ERRORS,
        },
    )
    def post(self, request, listing_id: int):
        """Add photos to a listing (a seller added some); they are validated and scored like the first ones."""
        listing: Listing = client_listing(client=client_of(request), listing_id=listing_id)
        form = serializers.AddImagesSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            intake = add_images(
                listing_id=listing.pk, files=form.validated_data["images"], idempotency_key=idempotency_key(request)
            )
        except ListingWithdrawn as error:
            raise ApiError("listing_withdrawn", str(error), 409) from error
        except IdempotencyKeyReused as error:
            raise _conflict(error) from error
        return Response(
            serializers.ListingCreatedSerializer(intake.listing).data,
            status=status.HTTP_201_CREATED if intake.created else status.HTTP_200_OK,
        )
