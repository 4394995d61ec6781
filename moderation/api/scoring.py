"""Score one photo now, and the desk's health: the API's two endpoints that store nothing."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.scoring import NoActiveModel
from moderation import worker
from moderation.api import serializers
from moderation.api.errors import ERRORS, ApiError
from moderation.api.throttling import ClientRateThrottle, ScoreRateThrottle
from moderation.selectors.health import check_health
from moderation.validation import validate_image


class ScoreView(APIView):
    """Score one photo now with the active model; nothing is stored (the original REST prototype's answer)."""

    parser_classes = [MultiPartParser]
    permission_classes = [IsAuthenticated]
    throttle_classes = [ClientRateThrottle, ScoreRateThrottle]

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
