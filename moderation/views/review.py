"""Browser pages of the review desk: queue, item, decisions, image files, staff upload and listings.

Views stay thin: parse the request, call one selector or service, render. Every state change is a POST with a
CSRF token; conflicts (stale claim, double submit) answer 409 so neither the browser nor a script mistakes them
for success.
"""

import mimetypes

from django.contrib import messages
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from moderation import clock
from moderation.forms import DecisionForm, UploadForm
from moderation.models import Client, Decision, ImageStatus, Listing, ListingImage, ListingStatus
from moderation.permissions import moderator_required
from moderation.selectors import queue as queue_selectors
from moderation.selectors.appeals import listing_appeals
from moderation.selectors.banks import image_matches
from moderation.selectors.settings import get_settings
from moderation.services import review
from moderation.services.ingest import DuplicateListing, StorageFull, StorageUnavailable, create_listing
from moderation.validation import ImageValidationError

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
SKIPPED_SESSION_KEY = "review_skipped"
LAST_DECISION_SESSION_KEY = "review_last_decision"
MAX_SKIPPED = 200


def _undo_context(request) -> dict:
    decision = queue_selectors.undoable_decision(request.user, request.session.get(LAST_DECISION_SESSION_KEY))
    return {"undo_decision": decision}


@require_GET
@moderator_required
def queue_view(request):
    """Show moderators the queue: counters, their current claim, and flagged items in review order."""
    page = queue_selectors.queue_page(request.GET.get("after") or None)
    context = {
        "page": page,
        "stats": queue_selectors.queue_stats(),
        "current_claim": queue_selectors.current_claim(request.user),
        "first_page": not request.GET.get("after"),
        "now_ts": clock.now(),
        **_undo_context(request),
    }
    return render(request, "moderation/queue.html", context)


@require_POST
@moderator_required
def next_item(request):
    """Claim the next item for a moderator ("Start reviewing", or `j` to skip the current one) and open it."""
    skipped = [pk for pk in request.session.get(SKIPPED_SESSION_KEY, []) if isinstance(pk, int)]
    skip = request.POST.get("skip", "")
    if skip.isdigit():
        skipped = [*skipped, int(skip)][-MAX_SKIPPED:]
    image = review.claim_next(user=request.user, exclude_ids=skipped)
    if image is None and skipped:
        # Only skipped items are left: put them back in play rather than showing an empty queue.
        skipped = []
        image = review.claim_next(user=request.user)
    request.session[SKIPPED_SESSION_KEY] = skipped
    if image is None:
        messages.info(request, "The queue is empty. Nice work.")
        return redirect("queue")
    return redirect("review-item", pk=image.pk)


@require_GET
@moderator_required
def item_view(request, pk: int):
    """Show a moderator one item, large, with its scores and history; opening it claims it unless it is held."""
    try:
        item = queue_selectors.item_view(pk)
    except ListingImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    conflict = ""
    if item.image.status == ImageStatus.FLAGGED:
        try:
            item.image = review.claim_item(user=request.user, image_id=pk)
        except review.StaleClaim as exc:
            conflict = str(exc)
        except review.AlreadyDecided:
            item.image.refresh_from_db()
    can_decide = item.image.status == ImageStatus.FLAGGED and not conflict
    settings_row = get_settings()
    context = {
        "item": item,
        "image": item.image,
        "listing": item.image.listing,
        "form": DecisionForm(),
        "can_decide": can_decide,
        "conflict": conflict,
        "lease_seconds": settings_row.claim_lease_seconds,
        "matches": image_matches(pk),
        **_undo_context(request),
    }
    return render(request, "moderation/item.html", context)


@require_POST
@moderator_required
def decide_view(request, pk: int):
    """Apply a moderator's decision and open the next item; a stale claim or double submit stores nothing (409)."""
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return render(
            request, "moderation/conflict.html", {"title": "Invalid decision", "errors": form.errors}, status=400
        )
    try:
        decision = review.decide(
            user=request.user,
            image_id=pk,
            outcome=form.cleaned_data["outcome"],
            policy_category=form.cleaned_data["policy_category"],
            note=form.cleaned_data["note"],
        )
    except ListingImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    except review.ReviewError as exc:
        context = {"title": "This item was not yours to decide", "detail": str(exc), "code": exc.code, "pk": pk}
        return render(request, "moderation/conflict.html", context, status=409)
    request.session[LAST_DECISION_SESSION_KEY] = decision.pk
    messages.success(request, f"{decision.get_outcome_display()}: image {pk}.")
    image = review.claim_next(user=request.user, exclude_ids=request.session.get(SKIPPED_SESSION_KEY, []))
    if image is None:
        return redirect("queue")
    return redirect("review-item", pk=image.pk)


@require_POST
@moderator_required
def undo_view(request, pk: int):
    """Let a moderator take back their own decision inside the undo window, and reopen its item."""
    try:
        image = review.undo_decision(user=request.user, decision_id=pk)
    except Decision.DoesNotExist as exc:
        raise Http404("No such decision.") from exc
    except review.UndoNotAllowed as exc:
        context = {"title": "Cannot undo", "detail": str(exc), "code": exc.code}
        return render(request, "moderation/conflict.html", context, status=409)
    request.session.pop(LAST_DECISION_SESSION_KEY, None)
    # The item we were handed after deciding goes back to the queue; the undone one is ours again.
    messages.info(request, f"Decision undone; image {image.pk} is back in review.")
    return redirect("review-item", pk=image.pk)


@require_POST
@moderator_required
def renew_view(request, pk: int):
    """Keep a moderator's claim alive while its page is open (called by the page's script every third of a lease)."""
    try:
        image = review.claim_item(user=request.user, image_id=pk)
    except ListingImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    except review.ReviewError as exc:
        return JsonResponse({"error": exc.code, "detail": str(exc)}, status=409)
    return JsonResponse({"id": image.pk, "claim_expires_at": image.claim_expires_at.isoformat()})


@require_POST
@moderator_required
def release_view(request, pk: int):
    """Give an item back when its moderator leaves the page (a beacon) or clicks "Back to queue"."""
    released = review.release_claim(user=request.user, image_id=pk)
    if request.POST.get("beacon"):
        return JsonResponse({"released": released})
    return redirect("queue")


@require_http_methods(["GET", "HEAD"])
@moderator_required
def image_file_view(request, pk: int):
    """The stored image, served to moderators only, with its real content type and `nosniff`.

    Uploads never go through a public media URL: the file name is generated, the bytes were re-encoded, and the
    content type comes from the validated format rather than the file name.
    """
    try:
        image = queue_selectors.image_file(pk)
    except ListingImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    content_type = CONTENT_TYPES.get(image.image_format.upper()) or mimetypes.guess_type(image.file.name)[0]
    if not image.file or content_type not in CONTENT_TYPES.values():
        raise Http404("No image file.")
    try:
        handle = image.file.open("rb")
    except FileNotFoundError as exc:
        raise Http404("Image file missing.") from exc
    response = FileResponse(handle, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Disposition"] = "inline"
    return response


@require_http_methods(["GET", "POST"])
@moderator_required
def upload_view(request):
    """Let a moderator upload one listing with its photos, through the same validation and ingest path as the API."""
    form = UploadForm(request.POST or None, request.FILES or None)
    status = 400 if request.method == "POST" else 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            listing = create_listing(
                client=Client.objects.desk(),
                external_id=data["external_id"],
                title=data["title"],
                description=data["description"],
                files=data["images"],
                submitted_by=request.user,
            ).listing
        except DuplicateListing as exc:
            form.add_error("external_id", str(exc))
        except ImageValidationError as exc:
            form.add_error("images", exc.detail)
        except (StorageFull, StorageUnavailable) as exc:
            # The desk's own failure, not the form's: the same statuses as the API, so monitoring sees them.
            form.add_error(None, str(exc))
            status = 507 if isinstance(exc, StorageFull) else 503
        else:
            messages.success(request, f"Listing {listing.external_id} received; its images are being scored.")
            return redirect("listing-detail", pk=listing.pk)
    return render(request, "moderation/upload.html", {"form": form}, status=status)


@require_GET
@moderator_required
def listings_view(request):
    """Show moderators recent listings, newest first, optionally filtered by status."""
    status = request.GET.get("status", "")
    if status not in ListingStatus.values:
        status = ""
    before = request.GET.get("before", "")
    rows, next_cursor = queue_selectors.listing_page(int(before) if before.isdigit() else None, status=status)
    context = {"listings": rows, "next_cursor": next_cursor, "status": status, "statuses": ListingStatus.choices}
    return render(request, "moderation/listings.html", context)


@require_GET
@moderator_required
def listing_detail_view(request, pk: int):
    """Show moderators a listing's appeals and its images with their statuses, every score and every decision."""
    try:
        listing = queue_selectors.listing_detail(pk)
    except Listing.DoesNotExist as exc:
        raise Http404("No such listing.") from exc
    context = {"listing": listing, "appeals": listing_appeals(listing.pk), "now": clock.now()}
    return render(request, "moderation/listing_detail.html", context)
