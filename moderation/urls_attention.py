"""URLs of the Needs attention page (moderators): failed images, and one action each to retry or send to review."""

from django.urls import path

from moderation.views import attention

urlpatterns = [
    path("attention/", attention.attention_view, name="needs-attention"),
    path("attention/<int:pk>/retry/", attention.retry_view, name="attention-retry"),
    path("attention/<int:pk>/send-to-review/", attention.send_to_review_view, name="attention-send-to-review"),
]
