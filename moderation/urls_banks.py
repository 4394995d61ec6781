"""URLs of the hash banks (mounted at /banks/): settings, entries, import and export. Admins."""

from django.urls import path

from moderation.views import banks

urlpatterns = [
    path("", banks.banks_view, name="banks"),
    path("<int:pk>/", banks.bank_detail_view, name="bank-detail"),
    path("<int:pk>/import/", banks.bank_import_view, name="bank-import"),
    path("<int:pk>/export/", banks.bank_export_view, name="bank-export"),
    path("<int:pk>/entries/<int:entry_pk>/remove/", banks.bank_entry_remove_view, name="bank-entry-remove"),
]
