"""Request size limits applied before a body is read: from `Content-Length`, and while a body streams in.

Django only caps a file's size once it has been received (spooled to disk), so a client could make a web worker
read gigabytes before being told no. The middleware refuses a declared body over `VIGIA_MAX_REQUEST_BYTES` before
reading a byte of it; the upload handler counts what actually arrives and stops at the same limit, whatever the
header said.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpResponse, JsonResponse


def _too_large(request) -> HttpResponse:
    detail = f"The request body is larger than the {settings.VIGIA_MAX_REQUEST_BYTES} bytes this server accepts."
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "too_large", "detail": detail}, status=413)
    return HttpResponse(detail, status=413, content_type="text/plain; charset=utf-8")


class RequestSizeLimitMiddleware:
    """Answer 413 to a request whose `Content-Length` is over the limit, without reading its body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > settings.VIGIA_MAX_REQUEST_BYTES:
            return _too_large(request)
        return self.get_response(request)


class LimitedUploadHandler(FileUploadHandler):
    """Count the bytes of a multipart body as they arrive and stop at `VIGIA_MAX_REQUEST_BYTES` (413)."""

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        """Pass the chunk on to the next handler, unless the body has grown past the limit."""
        self.received += len(raw_data)
        if self.received > settings.VIGIA_MAX_REQUEST_BYTES:
            raise RequestDataTooBig("The request body is larger than the server accepts.")
        return raw_data

    def file_complete(self, file_size):
        """Leave the file to the handlers after this one."""
        return None
