"""The load benchmark's users, run by Locust in a process of its own (Locust patches the standard library with
gevent on import, so `bench/load.py` never imports this file).

- `Marketplace` (50): one API client each, with its own key, posting single-photo listings at an open rate that
  adds up to `VIGIA_LOAD_UPLOADS_PER_S`, and now and then reading one of its listings back.
- `Moderator` (8): signs in (session and CSRF, as a browser), opens the queue page, claims the next item, opens
  it and decides it (confirm the red photos, reject the rest), as the review pages are used.

The production settings mark cookies `Secure` and trust `X-Forwarded-Proto` from the proxy in front of gunicorn.
This benchmark talks plain HTTP to gunicorn on loopback, so it sends that header itself, as the proxy would, and
carries the session and CSRF cookies by hand (an HTTP client rightly never sends a `Secure` cookie over HTTP).
"""

import io
import itertools
import os
import random
import re

from locust import HttpUser, between, constant_throughput, task

TOKENS = [token for token in os.environ.get("VIGIA_LOAD_TOKENS", "").split(",") if token]
MODERATORS = [pair.split(":", 1) for pair in os.environ.get("VIGIA_LOAD_MODERATORS", "").split(",") if pair]
UPLOADS_PER_S = float(os.environ.get("VIGIA_LOAD_UPLOADS_PER_S", "5"))
_tokens = itertools.cycle(TOKENS or [""])
_moderators = itertools.cycle(MODERATORS or [["", ""]])
_seeds = itertools.count(int(os.environ.get("VIGIA_LOAD_SEED", "0")))
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ITEM_PATH = re.compile(r"/review/(\d+)/$")


def photo(seed: int) -> tuple[bytes, bool]:
    """A distinct 320 x 240 JPEG of roughly one colour; a quarter are red (the model flags those)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    red = seed % 4 == 0
    base = np.array((200, 40, 40) if red else (40, 60, 200), dtype=np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, size=(240, 320, 3)), 0, 255).astype(np.uint8)
    output = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(output, format="JPEG", quality=85)
    return output.getvalue(), red


class Marketplace(HttpUser):
    """One marketplace's integration: uploads at its share of the total rate, reads some listings back."""

    fixed_count = int(os.environ.get("VIGIA_LOAD_API_CLIENTS", "50"))
    # Each client's share of the uploads, plus about one read per three uploads.
    wait_time = constant_throughput(UPLOADS_PER_S * 4 / 3 / max(1, fixed_count))

    def on_start(self):
        """Take this client's key."""
        self.token = next(_tokens)
        self.listings: list[int] = []

    @task(3)
    def upload(self):
        """Post a listing with one photo."""
        seed = next(_seeds)
        data, _ = photo(seed)
        response = self.client.post(
            "/api/v1/listings",
            data={"external_id": f"load-{seed}", "title": "load"},
            files=[("images", (f"{seed}.jpg", data, "image/jpeg"))],
            headers={"Authorization": f"Token {self.token}"},
            name="POST /api/v1/listings",
        )
        if response.status_code == 201:
            self.listings.append(response.json()["id"])

    @task(1)
    def read_back(self):
        """Read one of this client's listings, as a marketplace polls a fate."""
        if not self.listings:
            return
        listing = random.choice(self.listings[-50:])
        self.client.get(
            f"/api/v1/listings/{listing}",
            headers={"Authorization": f"Token {self.token}"},
            name="GET /api/v1/listings/{id}",
        )


class Moderator(HttpUser):
    """A moderator on the review pages: queue, claim the next item, look at it, decide."""

    fixed_count = int(os.environ.get("VIGIA_LOAD_MODERATOR_USERS", "8"))
    wait_time = between(1, 3)

    def on_start(self):
        """Sign in with a session, as a browser does."""
        self.cookies: dict[str, str] = {}
        self.username, password = next(_moderators)
        page = self.get("/login/", "GET /login/")
        response = self.post(
            "/login/",
            {"username": self.username, "password": password, "csrfmiddlewaretoken": self.csrf(page)},
            "POST /login/",
        )
        if response.status_code != 302:
            raise RuntimeError(f"login of {self.username} failed: {response.status_code}")

    def headers(self, path: str) -> dict:
        """What the proxy and the browser add: HTTPS as seen by Django, the cookies, origin and referer."""
        origin = f"https://{self.host.split('://', 1)[1]}"
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return {"X-Forwarded-Proto": "https", "Cookie": cookie, "Origin": origin, "Referer": origin + path}

    def keep_cookies(self, response):
        for name, value in response.cookies.items():
            self.cookies[name] = value
        return response

    def get(self, path: str, name: str):
        response = self.client.get(path, headers=self.headers(path), name=name, allow_redirects=False)
        self.client.cookies.clear()
        return self.keep_cookies(response)

    def post(self, path: str, data: dict, name: str):
        response = self.client.post(path, data=data, headers=self.headers(path), name=name, allow_redirects=False)
        self.client.cookies.clear()
        return self.keep_cookies(response)

    def csrf(self, page) -> str:
        match = CSRF_INPUT.search(page.text)
        return match.group(1) if match else self.cookies.get("csrftoken", "")

    @task
    def review(self):
        """Queue page, claim the next item, open it, decide it (red photos are confirmed)."""
        queue = self.get("/", "GET / (queue)")
        claimed = self.post("/review/next/", {"csrfmiddlewaretoken": self.csrf(queue)}, "POST /review/next/")
        match = ITEM_PATH.search(claimed.headers.get("Location", ""))
        if not match:
            return  # the queue is empty
        pk = match.group(1)
        item = self.get(f"/review/{pk}/", "GET /review/{id}/")
        outcome = "confirm" if random.random() < 0.8 else "reject"
        self.post(
            f"/review/{pk}/decide/",
            {"csrfmiddlewaretoken": self.csrf(item), "outcome": outcome, "policy_category": "", "note": ""},
            "POST /review/{id}/decide/",
        )
