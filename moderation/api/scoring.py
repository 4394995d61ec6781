"""Score one photo now: a scoring worker answers (the web process never loads a model); nothing is stored."""

import base64

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation import outbox
from moderation.api import serializers
from moderation.api.errors import ERRORS, ApiError
from moderation.api.throttling import ClientRateThrottle, ScoreRateThrottle
from moderation.services import score_now
from moderation.validation import validate_image

#: What a 503 tells the client to wait before trying again: a worker busy with a batch frees up within seconds.
RETRY_AFTER_SECONDS = 5


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
            503: OpenApiResponse(
                serializers.ErrorSerializer, description="No model is active, or no scoring worker answered in time"
            ),
            **ERRORS,
        },
    )
    def post(self, request):
        """Score one photo now with the active model, on a scoring worker, and return its probabilities."""
        form = serializers.ScoreRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        image = validate_image(form.validated_data["image"])
        photo = base64.b64encode(image.content).decode("ascii")
        try:
            answer = outbox.call(outbox.SCORE_NOW, [photo], timeout=settings.VIGIA_SCORE_TIMEOUT_SECONDS)
        except outbox.CallFailed as error:
            unavailable = ApiError("scoring_unavailable", f"No scoring worker answered: {error}. Try again.", 503)
            unavailable.wait = RETRY_AFTER_SECONDS
            raise unavailable from error
        if answer.get("error") == score_now.NO_ACTIVE_MODEL:
            raise ApiError("no_active_model", "No model is active yet; try again once one is.", 503)
        if answer.get("error") == score_now.CORRUPT:
            raise ApiError("corrupt", f"The image could not be decoded for scoring: {answer['detail']}")
        return Response(answer)
