"""The Hash banks pages for admins: every bank with its counts, a bank's settings, entries, import and export.

Server-rendered like the other admin pages; each request is one service or selector call. An import shows every
bad line with its number and stores nothing until the whole file is right; an export is the bank as an import file.
"""

from django import forms
from django.contrib import messages
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from moderation.models import BankAction, BankEntry, HashBank
from moderation.models.banks import DEFAULT_MATCH_DISTANCE, DEFAULT_QUALITY_FLOOR, MAX_MATCH_DISTANCE
from moderation.permissions import admin_required
from moderation.selectors.banks import bank_entries, bank_list, export_lines
from moderation.services import banks
from moderation.services.banks import BankError, ImportRejected

#: Largest hash file accepted by the form (a million lines with labels is about 70 MB; a programme's export is
#: usually far smaller, and bigger ones can be split).
MAX_IMPORT_BYTES = 100 * 1024 * 1024


class BankRulesForm(forms.Form):
    """A bank's settings: on or off, what a match does, how close counts and which hashes are too poor."""

    enabled = forms.BooleanField(required=False)
    action = forms.ChoiceField(choices=BankAction.choices)
    match_distance = forms.IntegerField(min_value=0, max_value=MAX_MATCH_DISTANCE, initial=DEFAULT_MATCH_DISTANCE)
    quality_floor = forms.IntegerField(min_value=0, max_value=100, initial=DEFAULT_QUALITY_FLOOR)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    labels = forms.CharField(required=False, help_text="Comma-separated labels an imported line may carry.")


class NewBankForm(BankRulesForm):
    """An imported bank: a name and its settings."""

    name = forms.CharField(max_length=100)
    enabled = forms.BooleanField(required=False, initial=True)


class ImportForm(forms.Form):
    """A file (or pasted text) of `<64 hex digits>[,<label>]` lines."""

    file = forms.FileField(required=False)
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))

    def hashes(self) -> str:
        """The text to import, from the file if one was sent."""
        upload = self.cleaned_data.get("file")
        if upload is None:
            return self.cleaned_data.get("text") or ""
        if upload.size > MAX_IMPORT_BYTES:
            raise ImportRejected([(0, f"the file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB")])
        try:
            return upload.read().decode("utf-8")
        except UnicodeDecodeError as error:
            raise ImportRejected([(0, "the file is not UTF-8 text")]) from error


def _rules(form: forms.Form) -> dict:
    values = dict(form.cleaned_data)
    values.pop("name", None)
    return values


@admin_required
@require_http_methods(["GET", "POST"])
def banks_view(request):
    """Every bank with its entries counted; create an imported bank."""
    form = NewBankForm(request.POST or None, initial={"action": BankAction.REVIEW})
    if request.method == "POST" and form.is_valid():
        try:
            bank = banks.create_bank(user=request.user, name=form.cleaned_data["name"], **_rules(form))
        except BankError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Bank {bank.name} created.")
            return redirect("bank-detail", pk=bank.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "moderation/banks/list.html", {"banks": bank_list(), "form": form}, status=status)


def _detail(request, bank: HashBank, *, rules=None, importer=None, errors=(), status=200):
    removed = request.GET.get("removed") == "1"
    try:
        before = int(request.GET.get("before") or 0) or None
    except ValueError:
        before = None
    entries, next_before = bank_entries(bank.pk, before_id=before, removed=removed)
    initial = {**{name: getattr(bank, name) for name in BankRulesForm.base_fields}, "labels": ", ".join(bank.labels)}
    context = {
        "bank": bank,
        "rules": rules or BankRulesForm(initial=initial),
        "importer": importer or ImportForm(),
        "errors": errors,
        "entries": entries,
        "next_before": next_before,
        "removed": removed,
    }
    return render(request, "moderation/banks/detail.html", context, status=status)


@admin_required
@require_http_methods(["GET", "POST"])
def bank_detail_view(request, pk: int):
    """A bank's settings (POST changes them), its entries newest first, and the import and export forms."""
    bank = get_object_or_404(HashBank, pk=pk)
    if request.method == "GET":
        return _detail(request, bank)
    rules = BankRulesForm(request.POST)
    if rules.is_valid():
        try:
            banks.update_bank(bank_id=bank.pk, user=request.user, **_rules(rules))
        except BankError as error:
            rules.add_error(None, str(error))
        else:
            messages.success(request, "Bank settings saved.")
            return redirect("bank-detail", pk=bank.pk)
    return _detail(request, bank, rules=rules, status=400)


@admin_required
@require_POST
def bank_import_view(request, pk: int):
    """Import a hash file: all its lines or none, every bad line listed with its number."""
    bank = get_object_or_404(HashBank, pk=pk)
    importer = ImportForm(request.POST, request.FILES)
    try:
        if not importer.is_valid():
            raise ImportRejected([(0, "send a file or paste hashes")])
        added = banks.import_hashes(bank_id=bank.pk, text=importer.hashes(), user=request.user)
    except ImportRejected as rejected:
        return _detail(request, bank, importer=importer, errors=rejected.errors, status=400)
    messages.success(request, f"{added} hash{'es' if added != 1 else ''} imported.")
    return redirect("bank-detail", pk=bank.pk)


@admin_required
@require_GET
def bank_export_view(request, pk: int):
    """The bank's live entries as a text file an import (here or elsewhere) reads back, streamed."""
    bank = get_object_or_404(HashBank, pk=pk)
    response = StreamingHttpResponse(export_lines(bank.pk), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="bank-{bank.pk}-pdq.txt"'
    return response


@admin_required
@require_POST
def bank_entry_remove_view(request, pk: int, entry_pk: int):
    """Take one entry out of its bank with a stated reason (audited)."""
    if not BankEntry.objects.filter(pk=entry_pk, bank_id=pk).exists():
        raise Http404("No such entry in this bank.")
    try:
        banks.remove_entry(entry_id=entry_pk, reason=request.POST.get("reason", ""), user=request.user)
    except BankError as error:
        messages.error(request, str(error))
        return redirect("bank-detail", pk=pk)
    messages.success(request, f"Entry {entry_pk} removed.")
    return redirect("bank-detail", pk=pk)
