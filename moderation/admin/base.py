"""What the desk's model admins share: the read-only admin of history."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: listed and shown, never added, changed or deleted through the admin."""

    def has_add_permission(self, request):
        """Refuse: rows are written by the desk's services."""
        return False

    def has_change_permission(self, request, obj=None):
        """Refuse: history is not edited."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Refuse: history is not deleted."""
        return False
