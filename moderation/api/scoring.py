"""Score one photo now: nothing is stored."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.scoring import NoActiveModel
from moderation import worker
from moderation.api import serializers
from moderation.api.errors import ERRORS, ApiError
from moderation.api.throttling import ClientRateThrottle, ScoreRateThrottle
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
