"""URLs of the review area: sign-in, the queue, items, decisions, the QA queue, image files, upload and listings."""

from django.contrib.auth import views as auth_views
from django.urls import path

from moderation.views import account, qa, review

urlpatterns = [
    path("", review.queue_view, name="queue"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("reauth/", account.reauth_view, name="reauth"),
    path("review/next/", review.next_item, name="review-next"),
    path("review/<int:pk>/", review.item_view, name="review-item"),
    path("review/<int:pk>/decide/", review.decide_view, name="review-decide"),
    path("review/<int:pk>/renew/", review.renew_view, name="review-renew"),
    path("review/<int:pk>/release/", review.release_view, name="review-release"),
    path("decisions/<int:pk>/undo/", review.undo_view, name="decision-undo"),
    path("qa/", qa.qa_queue_view, name="qa-queue"),
    path("qa/<int:pk>/verdict/", qa.qa_verdict_view, name="qa-verdict"),
    path("images/<int:pk>/", review.image_file_view, name="image-file"),
    path("upload/", review.upload_view, name="upload"),
    path("listings/", review.listings_view, name="listings"),
    path("listings/<int:pk>/", review.listing_detail_view, name="listing-detail"),
]
