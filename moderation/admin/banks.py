"""Hash banks in the admin: read-only history. Banks are changed on the desk's Hash banks page, which audits."""

from django.contrib import admin

from moderation.admin.base import ReadOnlyAdmin
from moderation.models import BankEntry, BankState, HashBank, ImageMatch


@admin.register(HashBank)
class HashBankAdmin(ReadOnlyAdmin):
    """Banks and their rules."""

    list_display = ("name", "kind", "enabled", "action", "match_distance", "quality_floor", "updated_at")
    list_filter = ("kind", "enabled", "action")


@admin.register(BankEntry)
class BankEntryAdmin(ReadOnlyAdmin):
    """Every entry ever added, removed ones included, with its source."""

    list_display = ("pk", "bank", "pdq_hash", "quality", "label", "source_decision", "created_at", "removed_at")
    list_filter = ("bank", "removed_at")
    search_fields = ("pdq_hash", "label", "removal_reason")
    list_select_related = ("bank",)
    raw_id_fields = ("source_decision", "source_image")


@admin.register(ImageMatch)
class ImageMatchAdmin(ReadOnlyAdmin):
    """Which photo matched which entry, how far, and what it did."""

    list_display = ("image", "entry", "bank", "distance", "variant", "action", "applied", "created_at")
    list_filter = ("bank", "action", "applied")
    list_select_related = ("bank",)
    raw_id_fields = ("image", "entry")


@admin.register(BankState)
class BankStateAdmin(ReadOnlyAdmin):
    """The banks' version scoring workers follow."""

    list_display = ("version", "retroactive_version")
