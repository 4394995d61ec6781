"""The learning-loop benchmark's simulated desk: the stream, the moderator working the queues, the rounds.

`bench/loop.py` sets up the desk and its processes and hands them to `Simulation`, which posts the stream through
the API, waits for scores, decides the review and QA queues by the true labels, waits for each retrain and
records a round after it: the active model, the never-retrained first model and a model trained on as many
photos drawn at random, all judged on the frozen test stream (`bench.harness.operating`).
"""

import io
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.harness.operating import at_budget, figures
from bench.harness.report import log
from bench.harness.stack import REPO, Services
from bench.harness.stream import Item
from bench.harness.workload import post_listing

PYTHON = Path(sys.executable)


def train_by_cli(args, work: Path, data: Path, registry: str, env: dict, *, activate: bool = False) -> str:
    """Train on the folder `data` into `work / registry` with the classifier's command line, as a user would, the
    features cached in `work`; returns the version. The first model and the random baseline both come this way, so
    they differ only in their photos."""
    trained = subprocess.run(
        [str(PYTHON), "-m", "classifier", "train", "--data", str(data), "--registry", str(work / registry),
         "--prohibited", args.streams.prohibited, "--backbone", args.backbone,
         "--cache-dir", str(work / "feature-cache"), "--seed", str(args.seed), "--no-progress"]
        + (["--activate"] if activate else [])
        + (["--image-size", str(args.image_size)] if args.image_size else []),
        check=True, env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(trained.stdout.strip().splitlines()[-1])["version"]


def photo_stream(args) -> list[tuple[Item, str]]:
    """The stream after the initial photos, drawn at the prevalence: (photo, how it was transformed). A
    `--reupload-share` of it re-uploads an earlier photo, transformed as a seller would
    (`bench.harness.photos.TRANSFORMS`); the rest are new photos ("")."""
    from bench.harness.photos import TRANSFORMS

    stream = [(item, "") for item in args.streams.draw("train", args.stream_size, purpose="stream")]
    rng = random.Random(args.seed + 1)
    for position in range(1, len(stream)):
        if rng.random() < args.reupload_share:
            item, _ = stream[rng.randrange(position)]
            stream[position] = (item, rng.choice(sorted(TRANSFORMS)))
    return stream


class Simulation:
    """The desk under a simulated moderator: photos streamed in, the queues worked by true labels, rounds recorded."""

    def __init__(self, args, services: Services, token: str, moderator, first_version: str, work):
        import requests

        from classifier.registry import Registry

        self.args, self.services, self.token, self.moderator = args, services, token, moderator
        self.streams, self.work = args.streams, work
        self.stream = photo_stream(args)
        # The frozen test stream: the test split at the same prevalence, never streamed and never trained on.
        self.test_items = self.streams.draw("test", args.test_size, purpose="test")
        self.test_set = self.streams.labelled(self.test_items)
        self.registry = Registry(work / "models")
        self.session = requests.Session()
        self.truth: dict[str, str] = {}
        self.scored: dict[tuple[str, str], list[float]] = {}
        self.rounds: list[dict] = []
        self.streamed = 0
        self.decided_elsewhere = 0
        self.first_version = first_version

    def scores(self, version: str, registry=None) -> list[float]:
        """A version's prohibited score on each photo of the frozen test stream (each version scored once)."""
        from classifier.evaluation import evaluate_model

        registry = registry or self.registry
        key = (str(registry.root), version)
        if key not in self.scored:
            model = registry.load(version)
            outcomes = evaluate_model(model, self.test_set, keep_outcomes=True)["outcomes"]
            by_key = dict(zip(outcomes["keys"], outcomes["scores"], strict=True))
            self.scored[key] = [by_key.get(example.sha256, 0.0) for example in self.test_set]
        return self.scored[key]

    def judged(self, version: str, review: float, auto: float | None, registry=None, budget: int | None = None) -> dict:
        """`figures` of a version on the frozen test stream, and with a `budget` its figures at that many review
        slots (`at_budget`)."""
        truths = [item.truth == self.streams.prohibited for item in self.test_items]
        ood = [item.out_of_distribution for item in self.test_items]
        scores = self.scores(version, registry)
        judged = figures(scores, truths, ood, review, auto)
        if budget is not None:
            judged.update(at_budget(scores, truths, budget))
        return judged

    def post(self, index: int, item: Item, transform: str = "") -> int:
        """Post a stream photo (transformed if it is a re-upload) as listing `loop-{index}`; its listing's ID."""
        external_id = f"loop-{index}"
        self.truth[external_id] = item.truth
        photo = self.streams.content(item)
        if transform:
            from PIL import Image

            from bench.harness.photos import TRANSFORMS, jpeg

            photo = jpeg(TRANSFORMS[transform](Image.open(io.BytesIO(photo)).convert("RGB")))
        _, body = post_listing(
            self.session, self.services.base, self.token, external_id, [photo], title=f"listing {index}", timeout=60,
            wait_when_throttled=True,
        )  # fmt: skip
        return body["id"]

    def work_queue(self) -> int:
        """The simulated moderator: the review queue, then the QA sample, each decided by its true label."""
        from moderation.selectors.calibration import qa_queue
        from moderation.services import auto_action, review

        decided = 0
        while True:
            image = review.claim_next(user=self.moderator)
            if image is None:
                break
            outcome = "confirm" if self.truth[image.listing.external_id] == self.streams.prohibited else "reject"
            try:
                review.decide(user=self.moderator, image_id=image.pk, outcome=outcome)
            except review.ReviewError:
                # Decided while it was open on the moderator's screen (a bank match taking down the copy of a
                # photo confirmed a moment ago): the page says so and the moderator moves on.
                self.decided_elsewhere += 1
                continue
            decided += 1
        for decision in list(qa_queue(limit=10_000)):
            truth = self.truth[decision.image.listing.external_id]
            outcome = "confirm" if truth == self.streams.prohibited else "reject"
            try:
                auto_action.qa_verdict(user=self.moderator, decision_id=decision.pk, outcome=outcome)
            except auto_action.QAError:
                self.decided_elsewhere += 1
                continue
            decided += 1
        return decided

    def settled(self) -> bool:
        """Nothing waits for a score, and every flagged image was scored by the active model, except those a bank
        match sent to review: a retroactive match can flag a cleared photo after a promotion re-scored the queue,
        and its score routes nothing (the next re-score keeps the match's routing)."""
        from moderation.models import BankAction, ImageStatus, ListingImage, ModelVersion

        active = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        open_images = ListingImage.objects.filter(status__in=[ImageStatus.PENDING, ImageStatus.FLAGGED])
        by_bank = open_images.filter(matches__applied=True, matches__action=BankAction.REVIEW)
        return (
            not open_images.filter(status=ImageStatus.PENDING).exists()
            and not open_images.exclude(model_version=active).exclude(pk__in=by_bank.values("pk")).exists()
        )

    def random_baseline(self, decisions: int) -> str:
        """Train, by the same command as the first model, on the initial photos plus `decisions` stream photos drawn
        uniformly at random with their true labels; returns the version (in its own registry)."""
        folder = self.work / f"random-{decisions}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.work / "initial", folder)
        streamed = [item for item, _ in self.stream[: self.streamed]]
        drawn = random.Random(self.args.seed + decisions).sample(streamed, min(decisions, len(streamed)))
        self.streams.export(drawn, folder / "drawn")
        for label_dir in (folder / "drawn").iterdir():
            for photo in label_dir.iterdir():
                photo.rename(folder / label_dir.name / f"drawn-{photo.name}")
        shutil.rmtree(folder / "drawn")
        return train_by_cli(self.args, self.work, folder, "random-models", self.services.env)

    def record(self, round_number: int, run=None) -> None:
        """One round's entry: the active model, the first model and the random baseline on the frozen test stream."""
        from classifier.registry import Registry
        from moderation.models import Decision, ModelVersion
        from moderation.selectors.settings import get_settings

        active = ModelVersion.objects.get(is_active=True).version
        row = get_settings()
        prohibited = self.streams.prohibited
        review, auto = row.threshold_for(prohibited), row.auto_threshold_for(prohibited)
        decisions = Decision.objects.filter(undone_at__isnull=True, automated=False).count()
        entry = {
            "round": round_number,
            "model_version": active,
            "decisions": decisions,
            "review_threshold": review,
            "auto_threshold": auto,
            "auto_off_reason": row.auto_off_reasons.get(prohibited, ""),
            **self.judged(active, review, auto),
            "streamed": self.streamed,
        }
        # The never-retrained first model at the initial threshold: it has no holdout to support auto-action. Both
        # baselines are also judged at the loop's review budget on this stream (`bench.harness.operating`).
        budget = entry["to_people_or_auto"]
        static = self.judged(self.first_version, self.args.threshold, None, budget=budget)
        entry.update({f"static_{key}": value for key, value in static.items()})
        if self.args.random_baseline and round_number > 0:
            version = self.random_baseline(decisions)
            random_models = Registry(self.work / "random-models")
            baseline = self.judged(version, self.args.threshold, None, random_models, budget=budget)
            entry.update({f"random_{key}": value for key, value in baseline.items()})
        if run is not None:
            entry.update(
                {
                    "run": run.pk,
                    "run_status": run.status,
                    "candidate": run.model_version,
                    "gate": run.reason,
                    "new_examples": run.new_examples,
                    "total_examples": run.total_examples,
                    "retrain_seconds": round((run.finished_at - run.started_at).total_seconds(), 1),
                }
            )
            if run.model_version:
                # The candidate on the frozen test stream too, so a reader can check each of the gate's calls.
                judged = self.judged(run.model_version, review, auto)
                entry["candidate_test"] = {key: judged[key] for key in ("precision", "recall")}
            # What the gate saw on the weighted holdout, next to what the frozen test stream says.
            for side in ("candidate", "active"):
                figures_seen = (run.gate or {}).get(side) or {}
                if figures_seen:
                    entry[f"gate_{side}"] = {
                        key: round(float(figures_seen[key]), 4) if figures_seen.get(key) is not None else None
                        for key in ("precision", "recall", "weighted_n")
                    }
        self.rounds.append(entry)
        log(
            f"round {round_number}: {active} actioned precision {entry['actioned_precision']:.3f} recall "
            f"{entry['actioned_recall']:.3f}, auto {entry['auto_share']:.3f} of violations (threshold {auto}), "
            f"review share {entry['review_share']:.3f}, F1 {entry['actioned_f1']:.3f} (static at "
            f"{self.args.threshold} {static['actioned_f1']:.3f}, at the same {budget} review slots "
            f"{static['budget_actioned_f1']:.3f}), {decisions} decisions"
            + (f"; run {run.pk} {run.status}: {run.reason}" if run is not None else "")
        )

    def run(self, deadline: float) -> int:
        """Stream, score, moderate and retrain until `--retrains` runs finished; returns how many did."""
        from moderation.models import TrainingRun, TrainingRunStatus

        unfinished = TrainingRun.objects.filter(status__in=[TrainingRunStatus.QUEUED, TrainingRunStatus.RUNNING])
        wait = self.services.wait_until
        self.record(0)
        finished_runs = 0
        while finished_runs < self.args.retrains and self.streamed < len(self.stream):
            if time.monotonic() > deadline:
                raise TimeoutError("the loop did not reach its retrains in time")
            chunk = self.stream[self.streamed : self.streamed + self.args.chunk]
            for offset, (item, transform) in enumerate(chunk):
                self.post(self.streamed + offset, item, transform)
            self.streamed += len(chunk)
            wait(self.settled, 600, "scores of the posted images")
            self.work_queue()
            while unfinished.exists():
                wait(lambda: not unfinished.exists(), 1200, "the training run", interval=1.0)
                for run in TrainingRun.objects.order_by("id")[finished_runs:]:
                    wait(self.settled, 600, "re-scoring after the run")
                    finished_runs += 1
                    self.record(finished_runs, run)
                # Images re-scored by a promoted model may have joined the queue; the moderator works them too.
                self.work_queue()
        return finished_runs
