"""Score one photo for a caller waiting on the answer (`POST /api/v1/score`), on a scoring worker; nothing is stored.

The web process never loads a model: a gunicorn worker that imported TensorFlow for this would hold about 0.6 GB
more, and a handful of calls would stall the moderators' pages behind forward passes. The view validates the
photo, hands it to a scoring worker through `outbox.call` and waits a few seconds for this service's answer.
"""

from classifier.scoring import NoActiveModel

#: What an answer says went wrong, for the view to turn into the API's error: no model, or an undecodable photo.
NO_ACTIVE_MODEL = "no_active_model"
CORRUPT = "corrupt"


def score_photo(*, content: bytes, scorer) -> dict:
    """The model's answer for one validated photo: `{"model_version", "probabilities"}`, or `{"error", "detail"}`.

    Errors are answers rather than exceptions: they cross the result backend as plain JSON, and the caller, not
    the worker, decides what the client sees.
    """
    try:
        prediction = scorer.predict([content])
    except NoActiveModel as error:
        return {"error": NO_ACTIVE_MODEL, "detail": str(error)}
    except ValueError as error:
        # The model's decoder refusing an image that passed validation (ImageDecodeError is a ValueError).
        return {"error": CORRUPT, "detail": str(error)}
    return {"model_version": prediction.model_version, "probabilities": prediction.probabilities[0]}
