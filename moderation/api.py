"""The REST API a marketplace talks to: send listings, read their fate, score one photo, check health.

Views are thin: a serializer checks the form fields, one service or selector call does the work. Every error,
Django's own included (unknown paths, oversized bodies, too many files), is answered as JSON
`{"error": code, "detail": text}` by `exception_handler`, so clients never have to parse an HTML error page.
"""

import logging

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.scoring import NoActiveModel
from moderation import serializers, worker
from moderation.selectors.health import check_health
from moderation.selectors.listings import get_listing_detail
from moderation.services.ingest import DuplicateListing, create_listing
from moderation.validation import ImageValidationError, validate_image

logger = logging.getLogger(__name__)

try:
    from django.core.exceptions import TooManyFilesSent
except ImportError:  # pragma: no cover - Django < 3.2.18 has no such limit
    TooManyFilesSent = ()


class ApiError(exceptions.APIException):
    """An error with its own code and status, e.g. 409 `duplicate_external_id` or 503 `no_active_model`."""

    def __init__(self, code: str, detail: str, status_code: int = status.HTTP_400_BAD_REQUEST):
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code


def error_response(code: str, detail: str, status_code: int, headers: dict | None = None) -> Response:
    """Build the API's one error shape, `{"error": code, "detail": text}`, with its status and headers."""
    return Response({"error": code, "detail": detail}, status=status_code, headers=headers)


def _flatten(detail, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}{name}: " if name else prefix)
        return out
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


def exception_handler(exc, context):
    """DRF's exception hook: every error becomes `{"error", "detail"}` with a 4xx status, never HTML."""
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, ImageValidationError):
        exc = ApiError(exc.code, exc.detail, exc.status)

    if isinstance(exc, RequestDataTooBig):
        return error_response("too_large", "The request body is larger than the server accepts.", 413)
    if TooManyFilesSent and isinstance(exc, TooManyFilesSent):
        return error_response("too_many_files", "Too many files in one request.", 400)
    if isinstance(exc, SuspiciousOperation):
        return error_response("bad_request", "The request was malformed.", 400)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        code = getattr(exc, "error_code", None) or exc.default_code
        return error_response(code, "; ".join(_flatten(exc.detail)), exc.status_code, headers)
    logger.exception("unhandled API error", exc_info=exc)
    return error_response("server_error", "Something went wrong on our side; it has been logged.", 500)


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Unknown paths under /api/ answer JSON, not Django's HTML 404 page (nor its HTML CSRF page for a POST)."""
    return JsonResponse({"error": "not_found", "detail": f"No API endpoint at {request.path}."}, status=404)


ERRORS = {
    400: OpenApiResponse(serializers.ErrorSerializer, description="Invalid request or image"),
    401: OpenApiResponse(serializers.ErrorSerializer, description="Missing or bad token"),
    413: OpenApiResponse(serializers.ErrorSerializer, description="Image or request too large"),
}


class ListingCreateView(APIView):
    """Receive a listing and its photos. All photos are valid and stored, or nothing is."""

    parser_classes = [MultiPartParser]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="create_listing",
        request={"multipart/form-data": serializers.ListingCreateSerializer},
        responses={
            201: serializers.ListingCreatedSerializer,
            409: OpenApiResponse(serializers.ErrorSerializer, description="external_id already sent"),
            **ERRORS,
        },
    )
    def post(self, request):
        """Store a listing and its photos, all or none, and queue the photos for scoring; 409 for a known id."""
        form = serializers.ListingCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            data = form.validated_data
            listing = create_listing(
                external_id=data["external_id"],
                title=data["title"],
                description=data["description"],
                files=data["images"],
                submitted_by=request.user,
            )
        except DuplicateListing as error:
            raise ApiError("duplicate_external_id", str(error), status.HTTP_409_CONFLICT) from error
        return Response(serializers.ListingCreatedSerializer(listing).data, status=status.HTTP_201_CREATED)


class ListingDetailView(APIView):
    """A listing's status, and for each image its status, scores (with model version) and decisions."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="get_listing",
        responses={200: serializers.ListingDetailSerializer, 404: serializers.ErrorSerializer, 401: ERRORS[401]},
    )
    def get(self, request, listing_id: int):
        """Return a listing's status and, for each image, its status, scores (with model version) and decisions."""
        return Response(serializers.ListingDetailSerializer(get_listing_detail(listing_id)).data)


class ScoreView(APIView):
    """Score one photo now with the active model; nothing is stored (the original REST prototype's answer)."""

    parser_classes = [MultiPartParser]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="score_image",
        request={"multipart/form-data": serializers.ScoreRequestSerializer},
        responses={
            200: serializers.ScoreResponseSerializer,
            503: OpenApiResponse(serializers.ErrorSerializer, description="No model is active"),
            **ERRORS,
        },
    )
    def post(self, request):
        """Score one photo now with the active model and return its probabilities; nothing is stored."""
        form = serializers.ScoreRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        image = validate_image(form.validated_data["image"])
        try:
            prediction = worker.get_scorer().predict([image.content])
        except NoActiveModel as error:
            raise ApiError("no_active_model", "No model is active yet; try again once one is.", 503) from error
        except ValueError as error:
            # The model's decoder refusing an image that passed validation (ImageDecodeError is a ValueError).
            raise ApiError("corrupt", f"The image could not be decoded for scoring: {error}") from error
        return Response({"model_version": prediction.model_version, "probabilities": prediction.probabilities[0]})


class HealthView(APIView):
    """Database, Redis, workers and the active model: 200 when all are fine, 503 otherwise. Anonymous."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="health", responses={200: serializers.HealthSerializer, 503: serializers.HealthSerializer}
    )
    def get(self, request):
        """Check the database, Redis, workers and the active model: 200 when all are fine, 503 otherwise. Anonymous."""
        health = check_health(timeout=1.0)
        return Response(health.as_dict(), status=200 if health.ok else 503)
