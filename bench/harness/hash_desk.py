"""The hash benchmark's parts that need the desk: propagation to another process, and the work banks save.

On a fresh PostgreSQL database with production settings (`stack.start_from_nothing`).

- `propagation_s`: a second process runs what a scoring worker does before each batch (`BankIndex.refresh`, then
  a lookup) every 50 ms, holding the hash of a mirrored copy of a photo; this process confirms the photo through
  the review service. The figure is from the confirmation's commit to the other process's first match. A copy
  uploaded then is matched when a worker scores it: add the pipeline's upload-to-score latency
  (`pipeline.json`) for the seller's view.
- Workload: a stream of Fashion-MNIST uploads (Pullover prohibited, Coat allowed) of which `--reupload-share`
  are re-uploads of an earlier photo, transformed as in the robustness part, goes through intake, the scoring
  service and a moderator who works the queue by the true labels after every 100 uploads: once with the banks
  and queue grouping, once without. The model's scores come from a stand-in that knows the labels (a noisy
  score per photo, the same for its copies): the decisions the queue asks of people are what is measured here,
  the model itself is measured by the learning-loop benchmark.
- `retroaction_s`: with `--retro-photos` live photos stored (random hashes, one of them the copy), a take-down
  entry is imported and the retroactive pass (`services.retroaction.apply_takedown_entries`, what the outbox
  queues after the import commits) is timed until it has taken the copy down. It reads every live photo's
  hashes, so it grows with the live photos, not with the bank.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import photos
from bench.harness.report import log
from bench.harness.stack import REPO, start_from_nothing

PROHIBITED, ALLOWED = "Pullover", "Coat"
CHUNK = 100


def run(args, work: Path) -> dict:
    """Both parts on a fresh database; returns their keys for hashes.json."""
    url = args.database_url or "postgres://postgres@127.0.0.1:5432/vigia_bench_hashes"
    work.mkdir(parents=True, exist_ok=True)
    start_from_nothing(work, url)
    results = propagation(args)
    results.update(workload(args))
    results.update(retroaction(args))
    return results


def _moderator():
    from django.contrib.auth import get_user_model

    from moderation.permissions import ensure_groups

    moderators, _ = ensure_groups()
    user, _ = get_user_model().objects.get_or_create(username="bench-moderator")
    user.groups.add(moderators)
    return user


@dataclass
class StandIn:
    """A scorer that knows each photo's label: one noisy score per picture, shared by its copies."""

    truth: dict[str, tuple[str, int]] = field(default_factory=dict)
    version: str = "v0001"
    prohibited: tuple[str, ...] = (PROHIBITED,)

    def refresh(self) -> bool:
        """Never changes model."""
        return False

    def predict(self, images):
        """Probabilities as the real scorer returns them."""
        out = []
        for data in images:
            label, item = self.truth[hashlib.sha256(data).hexdigest()]
            draw = random.Random(item).random()
            p = 0.45 + 0.55 * draw if label == PROHIBITED else 0.6 * draw
            p = min(1.0, max(0.0, p + random.uniform(-0.03, 0.03)))
            out.append({PROHIBITED: p, ALLOWED: 1 - p})
        return type("Prediction", (), {"model_version": self.version, "probabilities": out})()


def _store(scorer: StandIn, data: bytes, label: str, item: int, external_id: str):
    from moderation.models import Client
    from moderation.services.ingest import create_listing

    listing = create_listing(
        client=Client.objects.desk(), external_id=external_id, title="", description="", files=[_upload(data)]
    ).listing
    image = listing.images.get()
    # Intake re-encodes what it stores: the worker reads those bytes.
    with image.file.open("rb") as handle:
        scorer.truth[hashlib.sha256(handle.read()).hexdigest()] = (label, item)
    return image


def _upload(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("photo.jpg", data, content_type="image/jpeg")


def _score_all(scorer: StandIn) -> None:
    from moderation.models import ImageStatus, ListingImage
    from moderation.services import scoring

    while True:
        pending = list(ListingImage.objects.filter(status=ImageStatus.PENDING).values_list("pk", flat=True)[:32])
        if not pending:
            return
        scoring.score_batch(image_ids=pending, scorer=scorer, rng=random.random)


def _work_queue(moderator, truth: dict[int, str]) -> None:
    from moderation.services import review

    while (image := review.claim_next(user=moderator)) is not None:
        outcome = "confirm" if truth[image.pk] == PROHIBITED else "reject"
        review.decide(user=moderator, image_id=image.pk, outcome=outcome)


def _line(process: subprocess.Popen, timeout: float = 60.0) -> str:
    """The next line the process prints, or a RuntimeError when it prints none in time (it failed)."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"the watching process said nothing within {timeout:.0f} s (exit {process.poll()})")
    return line.strip()


def propagation(args) -> dict:
    """Seconds from a confirmation's commit to a match in another process, `--propagations` times."""
    from moderation.models import ModelVersion
    from moderation.services import review

    ModelVersion.objects.get_or_create(
        version="v0001",
        defaults={"labels": [ALLOWED, PROHIBITED], "prohibited_labels": [PROHIBITED], "is_active": True},
    )
    scorer, moderator = StandIn(), _moderator()
    from classifier.perceptual.pdq import distance, hash_image
    from moderation.models.banks import DEFAULT_QUALITY_FLOOR

    sources = list(photos.skimage_photos().values()) + list(photos.darknet_photos().values())
    # Photos whose mirrored copy matches and whose hash is above the banks' quality floor (a bank never matches a
    # low-quality entry, so the watcher would wait for ever): what is timed here is how fast a match propagates,
    # not whether there is one.
    mirrored = {id(im): photos.TRANSFORMS["mirror"](im) for im in sources}
    sources = [
        im
        for im in sources
        if hash_image(photos.jpeg(im)).quality > DEFAULT_QUALITY_FLOOR
        and min(
            distance(v, hash_image(photos.jpeg(im)).hash) for v in hash_image(photos.jpeg(mirrored[id(im)])).dihedral
        )
        <= 31
    ]
    times = []
    for round_number in range(args.propagations):
        image = sources[round_number % len(sources)]
        copy = mirrored[id(image)]
        # An item the stand-in scores well above the threshold, so the photo waits for the moderator.
        item = next(i for i in itertools.count(10**6 + 1000 * round_number) if random.Random(i).random() > 0.5)
        stored = _store(scorer, photos.jpeg(image), PROHIBITED, item, f"prop-{round_number}")
        _score_all(scorer)

        watcher = subprocess.Popen(
            [sys.executable, "-m", "bench.harness.hash_watch", hash_image(photos.jpeg(copy)).dihedral_hex],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if _line(watcher) != "ready":
                raise RuntimeError("the watching process did not start")
            time.sleep(random.uniform(0.0, 1.0))
            review.claim_item(user=moderator, image_id=stored.pk)
            review.decide(user=moderator, image_id=stored.pk, outcome="confirm")
            committed = time.time()
            matched = float(_line(watcher))
        finally:
            watcher.kill()
            watcher.wait(timeout=30)
        times.append(round(matched - committed, 3))
        log(f"propagation {round_number + 1}: {times[-1]} s")
    return {
        "propagation_s": max(times),
        "propagation_median_s": sorted(times)[len(times) // 2],
        "propagations": times,
    }


def workload(args) -> dict:
    """Moderator decisions for the same re-upload stream with banks and grouping, and without."""
    from django.conf import settings
    from django.core.management import call_command

    from bench.harness.workload import fashion_mnist

    images, labels = fashion_mnist("train")
    rng = random.Random(args.seed)
    chosen = [i for i in range(len(labels)) if labels[i] in (2, 4)][: args.stream]
    stream, earlier = [], []
    for index in chosen:
        if earlier and rng.random() < args.reupload_share:
            item, label = rng.choice(earlier)
            stream.append((item, label, rng.choice(list(photos.TRANSFORMS))))
        else:
            label = PROHIBITED if labels[index] == 2 else ALLOWED
            earlier.append((index, label))
            stream.append((index, label, None))
    results = {}
    for banks_on in (False, True):
        call_command("flush", interactive=False, verbosity=0)
        settings.VIGIA_QUEUE_GROUPING = banks_on
        name = "with" if banks_on else "without"
        results[name] = _one_pass(stream, images, banks_on, args.workload_side)
        log(f"workload {name} banks and grouping: {results[name]}")
    settings.VIGIA_QUEUE_GROUPING = True
    return {
        "workload_side": args.workload_side,
        "decisions_with_banks": results["with"]["moderator_decisions"],
        "decisions_without_banks": results["without"]["moderator_decisions"],
        "workload": {**results, "uploads": len(stream), "reuploads": sum(1 for s in stream if s[2])},
    }


def _one_pass(stream, images, banks_on: bool, side: int) -> dict:
    """One pass of the stream through intake, scoring and the queue; a listing photo is larger than a 28-pixel
    item, so each item is enlarged to `side` pixels (Lanczos) before a re-upload's transformation."""
    from django.db import transaction
    from PIL import Image

    from moderation.models import BankKind, Decision, HashBank, ModelVersion
    from moderation.services import bank_index, banks

    bank_index._process_index = None
    ModelVersion.objects.create(
        version="v0001", labels=[ALLOWED, PROHIBITED], prohibited_labels=[PROHIBITED], is_active=True
    )
    with transaction.atomic():
        for kind in (BankKind.CONFIRMED, BankKind.CLEARED):
            HashBank.objects.filter(pk=banks.decision_bank(kind).pk).update(enabled=banks_on)
        banks.bump_version()
    scorer, moderator, truth = StandIn(), _moderator(), {}
    started = time.monotonic()
    for start in range(0, len(stream), CHUNK):
        for offset, (item, label, transform) in enumerate(stream[start : start + CHUNK]):
            picture = Image.fromarray(255 - images[item]).convert("RGB")
            if side:
                picture = picture.resize((side, side), Image.Resampling.LANCZOS)
            if transform:
                picture = photos.TRANSFORMS[transform](picture)
            image = _store(scorer, photos.jpeg(picture), label, item, f"w-{start + offset}")
            truth[image.pk] = label
        _score_all(scorer)
        _work_queue(moderator, truth)
    decisions = Decision.objects.all()
    automated = decisions.filter(automated=True)
    return {
        "moderator_decisions": decisions.filter(automated=False, applied_from__isnull=True).count(),
        "applied_from_group": decisions.filter(applied_from__isnull=False).count(),
        "automated_takedowns": automated.count(),
        "automated_takedowns_of_allowed": sum(truth[d.image_id] == ALLOWED for d in automated),
        "seconds": round(time.monotonic() - started, 1),
    }


def retroaction(args) -> dict:
    """Time one retroactive pass over `args.retro_photos` live photos for a newly imported take-down entry."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import connection

    from moderation.models import BankAction, Client, ImageStatus, Listing, ListingImage
    from moderation.services import banks
    from moderation.services.retroaction import apply_takedown_entries

    rng = np.random.default_rng(args.seed + 2)
    listing = Listing.objects.create(client=Client.objects.desk(), external_id="bench-retroaction")
    copy_at = int(rng.integers(args.retro_photos))
    target = ""
    for start in range(0, args.retro_photos, 5000):
        count = min(5000, args.retro_photos - start)
        codes = rng.integers(0, 256, (count, 16 * 32), dtype=np.uint8)
        rows = []
        for offset, row in enumerate(codes):
            hexes = row.tobytes().hex()
            if start + offset == copy_at:
                target = hexes[:64]
            rows.append(
                ListingImage(
                    listing=listing,
                    file=f"images/bench-retro-{start + offset}.jpg",
                    sha256=f"{start + offset:064x}",
                    status=ImageStatus.CLEARED,
                    pdq_hash=hexes[:64],
                    pdq_quality=100,
                    pdq_dihedral=hexes[:512],
                    pdq_centre=hexes[512:],
                    pdq_centre_quality=100,
                )
            )
        ListingImage.objects.bulk_create(rows)
    # Statistics as autovacuum keeps them on a table that filled over time: right after a bulk insert the planner
    # takes the table for empty and walks every listing instead of the photos' primary key (6.5 s a chunk).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE moderation_listingimage, moderation_listing")
    admin, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_superuser": True})
    bank = banks.create_bank(user=admin, name="bench retroaction", action=BankAction.TAKE_DOWN)
    apply_takedown_entries()  # whatever the workload left queued, so the timed pass has one entry to look for
    banks.import_hashes(bank_id=bank.pk, text=target, user=admin)
    started = time.perf_counter()
    acted = apply_takedown_entries()
    seconds = time.perf_counter() - started
    taken_down = ListingImage.objects.filter(pdq_hash=target, status=ImageStatus.CONFIRMED).count()
    log(f"retroaction over {args.retro_photos} live photos: {seconds:.2f} s, {acted} taken down")
    return {
        "retroaction_s": round(seconds, 2),
        "retroaction_live_photos": args.retro_photos,
        "retroaction_taken_down": taken_down,
    }
