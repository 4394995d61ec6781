"""The Needs attention page: images scoring gave up on, each with Retry and Send to human review, for moderators.

Both actions are one POST each (CSRF-protected) and then back to the page with a message; an image someone else
already handled answers 409 with the conflict page, like a double submit in the review queue.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from moderation.models import ListingImage
from moderation.permissions import moderator_required
from moderation.selectors.attention import attention_page
from moderation.services import attention


@require_GET
@moderator_required
def attention_view(request):
    """Failed images oldest first with the reason, attempts and when; below, the images waiting for a retry."""
    after = request.GET.get("after", "")
    page = attention_page(int(after) if after.isdigit() else None)
    return render(request, "moderation/attention.html", {"page": page, "first_page": not after})


def _act(request, pk: int, action, done: str):
    try:
        image = action(image_id=pk, user=request.user)
    except ListingImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    except attention.NotFailed as exc:
        context = {"title": "Already handled", "detail": str(exc), "code": exc.code, "pk": pk}
        return render(request, "moderation/conflict.html", context, status=409)
    messages.success(request, f"Image {image.pk} {done}.")
    return redirect("needs-attention")


@require_POST
@moderator_required
def retry_view(request, pk: int):
    """Score a failed image again from its first attempt (queued through the outbox)."""
    return _act(request, pk, attention.retry_image, "queued for scoring again")


@require_POST
@moderator_required
def send_to_review_view(request, pk: int):
    """Put a failed image in the review queue for a moderator, without a model score."""
    return _act(request, pk, attention.send_to_review, "sent to human review")
