"""Users and groups in the admin: superusers only, and every change audited (roles before and after).

Roles are groups (`moderators`, `admins`), so who may decide, change thresholds or promote models is decided here.
An admin who could edit users could make anyone a superuser; only superusers manage accounts.
"""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from moderation.models import AuditAction
from moderation.services import audit

ACCOUNT_FIELDS = ("username", "is_active", "is_staff", "is_superuser", "email")


def _account(user: User) -> dict:
    return {**audit.snapshot(user, ACCOUNT_FIELDS), "groups": sorted(user.groups.values_list("name", flat=True))}


class SuperuserOnly:
    """Account admin for superusers only, whatever permissions a group grants."""

    def has_module_permission(self, request):
        """Show the app to superusers only."""
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        """Superusers only."""
        return request.user.is_active and request.user.is_superuser

    has_add_permission = has_view_permission
    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission


class AuditedUserAdmin(SuperuserOnly, UserAdmin):
    """Users, with every created, changed or deleted account audited (flags and roles before and after)."""

    def save_model(self, request, obj, form, change):
        """Remember the account as it was, for the entry written once its groups are saved too."""
        request._vigia_account_before = _account(User.objects.get(pk=obj.pk)) if change and obj.pk else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        """Save the groups, then audit the whole change."""
        super().save_related(request, form, formsets, change)
        before = getattr(request, "_vigia_account_before", None)
        after = _account(form.instance)
        if before is None:
            audit.record(action=AuditAction.USER_CHANGED, obj=form.instance, after=after, note="created")
            return
        changed_before, changed_after = audit.changes(before, after)
        if changed_after:
            action = AuditAction.ROLE_CHANGED if set(changed_after) & {"groups", "is_superuser", "is_staff"} else None
            audit.record(
                action=action or AuditAction.USER_CHANGED, obj=form.instance, before=changed_before, after=changed_after
            )

    def delete_model(self, request, obj):
        """Audit the deletion (a user with history is protected and cannot be deleted: deactivate instead)."""
        before = _account(obj)
        super().delete_model(request, obj)
        audit.record(
            action=AuditAction.USER_CHANGED, object_type="user", object_id=str(before["username"]), before=before
        )


class AuditedGroupAdmin(SuperuserOnly, GroupAdmin):
    """Groups (roles), with every change of their permissions audited."""

    def save_related(self, request, form, formsets, change):
        """Save the permissions, then audit them."""
        super().save_related(request, form, formsets, change)
        permissions = sorted(form.instance.permissions.values_list("codename", flat=True))
        audit.record(action=AuditAction.ROLE_CHANGED, obj=form.instance, after={"permissions": permissions})


admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.register(User, AuditedUserAdmin)
admin.site.register(Group, AuditedGroupAdmin)
