"""URLs of appeals and the moderator's record: the Appeals queue, one appeal and its decision (moderators), and
per moderator what became of their decisions (admins)."""

from django.urls import path

from moderation.views import appeals

urlpatterns = [
    path("appeals/", appeals.appeals_view, name="appeals"),
    path("appeals/<int:pk>/", appeals.appeal_view, name="appeal-detail"),
    path("appeals/<int:pk>/decide/", appeals.decide_view, name="appeal-decide"),
    path("moderators/", appeals.moderators_view, name="moderator-record"),
]
