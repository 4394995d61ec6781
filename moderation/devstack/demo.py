"""The demo listings `make run` posts once the desk is up: photos through the real API, then their routing.

They show a first-time user the whole path (upload, scoring, routing to the review queue) without any client of
their own. Only the standard library speaks HTTP here, so the desk needs no extra client dependency. Everything
runs in a thread beside the supervisor: a failure is logged under `demo` and ends the thread, never the desk.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from moderation.devstack.supervisor import Supervisor

DEMO_PROHIBITED = "Pullover"
#: The one label of everything else (`classifier.mixture`): other garments, shoes, bags, photos of other things.
DEMO_ALLOWED = "Allowed"
#: Each listing's photos, by kind: the prohibited class's folder, or a file-name prefix in the allowed folder
#: (a Fashion-MNIST class, ``darknet``, ``scikit-image``, ``foolbox``, ``synthetic-solid``...).
DEMO_LISTINGS = [
    ("demo-1", "Chunky knit pullover, barely worn", "Warm wool blend, size M. Smoke-free home.", ["Pullover"]),
    ("demo-2", "Winter coat with hood", "Long padded coat, size L, two zip pockets.", ["Coat"]),
    ("demo-3", "Two sweaters, one price", "Selling both together, see photos.", ["Pullover", "Pullover"]),
    ("demo-4", "Sneakers and a jumper", "Moving out, everything must go.", ["Sneaker", "Pullover"]),
    ("demo-5", "Leather handbag", "Brown, two straps, barely used.", ["Bag"]),
    ("demo-6", "Oversized crew-neck", "Soft cotton, fits S to L.", ["Pullover"]),
    ("demo-7", "Cat scratching post", "Our cat loved it; photo of the cat, not the post.", ["scikit-image-chelsea"]),
    ("demo-8", "Placeholder photo", "Seller uploaded a blank image.", ["synthetic-solid"]),
]


def demo_photo_pools(photos: Path) -> dict[str, list[Path]]:
    """The exported test photos of every kind the demo listings name, each pool in a stable order."""
    kinds = {kind for *_, listing_kinds in DEMO_LISTINGS for kind in listing_kinds}
    pools = {}
    for kind in kinds:
        if kind == DEMO_PROHIBITED:
            pools[kind] = sorted((photos / kind).glob("*"))
        else:
            pools[kind] = sorted((photos / DEMO_ALLOWED).glob(f"{kind}*"))
    return pools


def multipart_body(fields: dict[str, str], files: list[tuple[str, Path]]) -> tuple[bytes, str]:
    """Encode a multipart/form-data body with the standard library (no extra client dependency)."""
    boundary = f"vigia-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files:
        content_type = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(header.encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http_json(url: str, token: str | None = None, data: bytes | None = None, content_type: str | None = None):
    """One request; returns (status, parsed JSON or text). HTTP errors are answers too, not exceptions."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"Token {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")[:200]


def demo_listings_needed() -> bool:
    """Whether no demo listing exists yet (a second start posts none)."""
    from moderation.models import Listing

    return not Listing.objects.filter(external_id__startswith="demo-").exists()


def load_demo_listings(supervisor: Supervisor, base_url: str, token: str, photos: Path) -> None:
    """Post the demo listings through the real API once the server answers, then report their routing.

    Runs in a thread next to the supervisor, so every failure is logged and ends the thread, never the desk.
    """

    def log(message: str) -> None:
        supervisor.log("demo", message)

    if not wait_for_server(supervisor, base_url):
        if not supervisor.stopping:
            log("the web server did not answer within 120 s; no demo listings loaded")
        return
    try:
        created = post_demo_listings(base_url, token, photos, log)
        follow_demo_listings(supervisor, base_url, token, created, log)
    except OSError as error:
        if not supervisor.stopping:
            log(f"demo listings stopped: {error}")


def wait_for_server(supervisor: Supervisor, base_url: str, timeout: float = 120) -> bool:
    """Whether the web server answered the health endpoint within `timeout` seconds (False once stopping)."""
    deadline = time.monotonic() + timeout
    while not supervisor.stopping and time.monotonic() < deadline:
        try:
            http_json(f"{base_url}/api/v1/health")
            return True
        except OSError:
            time.sleep(0.5)
    return False


def post_demo_listings(base_url: str, token: str, photos: Path, log: Callable[[str], None]) -> list[int]:
    """Post every demo listing with photos of its classes; returns the IDs of those the API created."""
    pools = demo_photo_pools(photos)
    created: list[int] = []
    for external_id, title, description, labels in DEMO_LISTINGS:
        files = [("images", pools[label].pop()) for label in labels if pools.get(label)]
        if not files:
            log(f"{external_id}: no exported photo of {', '.join(labels)} here; not posted")
            continue
        body, content_type = multipart_body(
            {"external_id": external_id, "title": title, "description": description}, files
        )
        status, answer = http_json(f"{base_url}/api/v1/listings", token, body, content_type)
        if status == 201 and isinstance(answer, dict):
            created.append(answer["id"])
            log(f"POST /api/v1/listings {external_id}: 201, listing {answer['id']}, {len(files)} image(s)")
        else:
            log(f"POST /api/v1/listings {external_id}: {status} {answer}")
    return created


def follow_demo_listings(
    supervisor: Supervisor, base_url: str, token: str, created: list[int], log: Callable[[str], None]
) -> None:
    """Log each listing's routing once all its photos are scored, for up to five minutes."""
    pending = set(created)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline and not supervisor.stopping:
        time.sleep(3)
        for listing_id in sorted(pending):
            status, answer = http_json(f"{base_url}/api/v1/listings/{listing_id}", token)
            if status != 200 or not isinstance(answer, dict):
                continue
            images = answer.get("images", [])
            if images and all(image.get("status") != "pending" for image in images):
                pending.discard(listing_id)
                statuses = ", ".join(str(image.get("status")) for image in images)
                log(f"listing {listing_id} ({answer.get('external_id')}): {answer.get('status')} [{statuses}]")
    if pending and not supervisor.stopping:
        log(f"listings still waiting for a score: {sorted(pending)} (is a model active and the worker up?)")
    elif created and not pending:
        log(f"all demo listings scored; flagged photos are waiting in the queue at {base_url}/")
