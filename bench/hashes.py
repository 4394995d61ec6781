"""Hash banks benchmark: robustness of PDQ matching, its speed, propagation and the moderator work it saves.

(`make bench-hashes`, writes bench/results/hashes.json)

- Robustness: every source photo (`bench.harness.photos`) is transformed 8 ways (JPEG quality 40, half size, 5%
  crop, brightness +/-25%, mirror, 90 degree rotation, a text overlay) and looked up, through its 8 dihedral
  variants and its centre's 8, in a bank of the originals (each with its two centred crops and its centre, as a
  confirmation banks a photo) plus
  `--unrelated` other hashes (Fashion-MNIST items not used as sources, topped up with random hashes), at distance
  31 with quality 49 or less discarded, as the desk does; an off-centre crop is reported beside the targets. Recall per
  transformation; `false_match_rate` is the share of `--distractors` photos not in the bank that match anything.
- Speed: `hash_ms` (decode and hash one upload, as the worker does), `lookups_per_s` (exact lookups of one
  256-bit hash against `--bank-size` entries, one process) and `image_lookups_per_s` (a photo: its 16 lookups),
  checked against brute force on a sample.
- `propagation_s`, the workload and `retroaction_s` (`bench.harness.hash_desk`): on a fresh PostgreSQL database.

Smoke run: `make bench-hashes ARGS="--quick --out /tmp/hashes"`.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import photos  # noqa: E402
from bench.harness.report import log, machine_info, write_json  # noqa: E402
from classifier.perceptual.index import HashIndex, brute_force  # noqa: E402
from classifier.perceptual.pdq import PdqHash, center_crop_hashes, hash_image  # noqa: E402

DISTANCE, FLOOR = 31, 49


def parse_args():
    """The command line: sizes of each part, which parts to run, where to write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-sources", type=int, default=1000, help="Fashion-MNIST items used as sources")
    parser.add_argument("--unrelated", type=int, default=100_000, help="other hashes in the robustness bank")
    parser.add_argument("--distractors", type=int, default=5000, help="photos not in the bank, for false matches")
    parser.add_argument("--bank-size", type=int, default=1_000_000, help="entries for the lookup speed")
    parser.add_argument("--lookups", type=int, default=4000, help="hash lookups timed")
    parser.add_argument("--propagations", type=int, default=10)
    parser.add_argument("--stream", type=int, default=2000, help="uploads in the workload stream")
    parser.add_argument("--reupload-share", type=float, default=0.2)
    parser.add_argument(
        "--retro-photos", type=int, default=100_000, help="live photos the timed retroactive pass reads"
    )
    parser.add_argument(
        "--workload-side",
        type=int,
        default=112,
        help="pixels a side the workload stream's 28-pixel items are enlarged to (0: as they are, under the 64 "
        "pixels a photo needs to match)",
    )
    parser.add_argument("--skip-desk", action="store_true", help="no database parts (propagation, workload)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run of every part")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.quick:
        args.fashion_sources, args.unrelated, args.distractors = 60, 3000, 300
        args.bank_size, args.lookups, args.propagations, args.stream = 100_000, 400, 3, 150
        args.retro_photos = 5000
    return args


def lookup_hits(index: HashIndex, qualities: dict[int, int], pdq) -> set[int]:
    """The entries a photo matches the way the desk matches: any of its 16 lookups (its variants, its centre's)
    within 31, both qualities over 49 (`qualities` holds each source's; its derived entries under the floor are
    not banked)."""
    queries = [variant for variant, quality in pdq.lookups() if quality > FLOOR]
    if not queries:
        return set()
    found = index.search(queries, DISTANCE)
    return {int(entry) for entry in found.ids if qualities.get(int(entry), 100) > FLOOR}


#: Hashing as the desk does, and with photos under `MIN_MATCH_SIDE` pixels allowed to match (for the record).
DESK, SMALL_PHOTOS_MATCH = {}, {"min_match_side": 0}


def robustness(args) -> dict:
    """Recall per transformation and the false-match rate, on the real photos installed here."""
    started = time.monotonic()
    sources: dict = {}
    available = {}
    for name, loader in [
        ("skimage", photos.skimage_photos),
        ("darknet", photos.darknet_photos),
        ("foolbox", photos.foolbox_photos),
        ("fashion-mnist", lambda: photos.fashion_photos("train", 0, args.fashion_sources)),
    ]:
        found = loader()
        available[name] = len(found)
        sources.update(found)
    log(f"robustness: {len(sources)} source photos {available}")
    names = list(sources)
    # The bits do not depend on the small-photo rule, only the quality does: one bank serves both passes.
    originals = {i: hash_image(photos.jpeg(sources[name]), **SMALL_PHOTOS_MATCH) for i, name in enumerate(names)}
    # As a confirmation banks a photo: itself, its centred crops and its centre, all citing the same photo.
    # A derived entry under the floor never matches in the desk, so it is not banked here.
    crops = {
        i: [
            extra
            for extra in [
                *center_crop_hashes(photos.jpeg(sources[names[i]])),
                PdqHash(pdq.centre[0], pdq.centre_quality, ()),
            ]
            if extra.quality > FLOOR
        ]
        for i, pdq in originals.items()
    }
    unrelated = [
        hash_image(photos.jpeg(image)).hash
        for image in photos.fashion_photos("train", args.fashion_sources, args.unrelated).values()
    ]
    rng = np.random.default_rng(args.seed)
    top_up = max(0, args.unrelated - len(unrelated))
    unrelated += [bytes(row) for row in rng.integers(0, 256, (top_up, 32), dtype=np.uint8)]
    codes = [originals[i].hash for i in range(len(names))] + unrelated
    ids = list(range(len(codes)))
    for i, extra in crops.items():
        codes += [pdq.hash for pdq in extra]
        ids += [i] * len(extra)
    index = HashIndex(codes, np.array(ids))
    distractors = photos.fashion_photos("test", 0, args.distractors)
    result = _match_rates(index, sources, names, distractors, DESK)
    log("  with photos under the minimum side matching, as before the rule:")
    result["if_small_photos_matched"] = _match_rates(index, sources, names, distractors, SMALL_PHOTOS_MATCH)
    return {
        **result,
        "recall_targets": photos.TARGETS,
        "recall_met": {name: result["recall"][name] >= target for name, target in photos.TARGETS.items()},
        "sources": available,
        "bank_entries": len(codes),
        "seconds": round(time.monotonic() - started, 1),
    }


def _match_rates(index: HashIndex, sources: dict, names: list[str], distractors: dict, options: dict) -> dict:
    """Recall per transformation, by source, and false matches, hashing with `options` (`hash_image`'s)."""
    originals = {i: hash_image(photos.jpeg(sources[name]), **options) for i, name in enumerate(names)}
    qualities = {i: pdq.quality for i, pdq in originals.items()}
    usable = [i for i, pdq in originals.items() if pdq.quality > FLOOR]
    recall, wrong, per_kind = {}, {}, {}
    for transform, apply in {**photos.TRANSFORMS, **photos.EXTRA}.items():
        hits = misses = others = 0
        for i in usable:
            copy = hash_image(photos.jpeg(apply(sources[names[i]])), **options)
            matched = lookup_hits(index, qualities, copy)
            hits += i in matched
            misses += i not in matched
            others += bool(matched - {i})
            kind = names[i].split("/")[0]
            per_kind.setdefault(kind, {}).setdefault(transform, [0, 0])
            per_kind[kind][transform][0 if i in matched else 1] += 1
        recall[transform] = round(hits / max(1, hits + misses), 4)
        wrong[transform] = others
        target = photos.TARGETS.get(transform, "none")
        log(f"  {transform:20s} recall {recall[transform]:.3f} (target {target}), {others} matched another photo")
    false = sum(
        bool(lookup_hits(index, qualities, hash_image(photos.jpeg(image), **options))) for image in distractors.values()
    )
    rate = false / max(1, len(distractors))
    log(f"  false matches: {false} of {len(distractors)} photos not in the bank ({rate:.4%}; target <= 0.1%)")
    return {
        "recall": recall,
        "recall_by_source": {
            kind: {t: round(h / max(1, h + m), 4) for t, (h, m) in by_t.items()} for kind, by_t in per_kind.items()
        },
        # Fashion-MNIST items are 28 x 28 pixels: halving one leaves 14, where no hash has much to go on.
        "recall_photos": _pooled(per_kind, exclude="fashion-mnist"),
        "matched_another_photo": wrong,
        "false_match_rate": round(rate, 6),
        "false_matches": false,
        "distractors": len(distractors),
        "sources_used": len(usable),
        "sources_under_quality_floor": len(names) - len(usable),
    }


def _pooled(per_kind: dict, exclude: str) -> dict:
    """Recall per transformation over every source kind but one."""
    totals: dict = {}
    for kind, by_transform in per_kind.items():
        if kind != exclude:
            for transform, (hits, misses) in by_transform.items():
                pair = totals.setdefault(transform, [0, 0])
                pair[0], pair[1] = pair[0] + hits, pair[1] + misses
    return {transform: round(h / max(1, h + m), 4) for transform, (h, m) in totals.items()}


def speed(args) -> dict:
    """Hash cost per upload, and exact lookups against a large bank in one process."""
    sources = {**photos.skimage_photos(), **photos.darknet_photos(), **photos.foolbox_photos()}
    uploads = [photos.jpeg(image) for image in sources.values()]
    uploads += [photos.jpeg(image.resize((1600, 1200))) for image in list(sources.values())[:10]]
    for data in uploads[:3]:
        hash_image(data)  # warm up
    times = []
    for data in uploads:
        start = time.perf_counter()
        hash_image(data)
        times.append((time.perf_counter() - start) * 1000)
    rng = np.random.default_rng(args.seed + 1)
    codes = rng.integers(0, 256, (args.bank_size, 32), dtype=np.uint8)
    queries = [
        hash_image(photos.jpeg(photos.TRANSFORMS[t](image))) for image in sources.values() for t in photos.TRANSFORMS
    ]
    planted = rng.choice(args.bank_size, size=len(queries), replace=False)
    for row, pdq in zip(planted, queries, strict=True):
        codes[row] = np.frombuffer(pdq.hash, np.uint8)
    built = time.perf_counter()
    index = HashIndex(codes, np.arange(args.bank_size))
    build_s = time.perf_counter() - built
    per_photo = len(queries[0].lookups())
    variants = np.frombuffer(b"".join(v for pdq in queries for v, _q in pdq.lookups()), np.uint8).reshape(-1, 32)
    order = rng.integers(0, len(variants), args.lookups)
    single = variants[order]
    start = time.perf_counter()
    for row in single:
        index.search(row[None, :], DISTANCE)
    per_hash_s = (time.perf_counter() - start) / len(single)
    batches = [
        variants[per_photo * i : per_photo * (i + 1)]
        for i in rng.integers(0, len(queries), max(1, args.lookups // per_photo))
    ]
    start = time.perf_counter()
    for batch in batches:
        index.search(batch, DISTANCE)
    per_photo_s = (time.perf_counter() - start) / len(batches)
    batch32 = [np.concatenate(batches[i : i + 32]) for i in range(0, len(batches) - 31, 32)] or [
        np.concatenate(batches)
    ]
    start = time.perf_counter()
    for batch in batch32:
        index.search(batch, DISTANCE)
    per_photo_batched_s = (time.perf_counter() - start) / (sum(len(b) for b in batch32) / per_photo)
    sample = single[:50]
    exact = index.search(sample, DISTANCE)
    truth = brute_force(sample, codes, np.arange(args.bank_size), DISTANCE)
    result = {
        "hash_ms": round(statistics.median(times), 2),
        "hash_ms_mean": round(statistics.mean(times), 2),
        "hash_ms_1600x1200": round(statistics.median(times[-10:]), 2),
        "hashed_uploads": len(times),
        "bank_size": args.bank_size,
        "lookups_per_s": round(1 / per_hash_s),
        "image_lookups_per_s": round(1 / per_photo_s),
        "lookups_per_image": per_photo,
        "image_lookups_per_s_batch_32": round(1 / per_photo_batched_s),
        "exact": bool(exact.ids.tolist() == truth.ids.tolist() and exact.query.tolist() == truth.query.tolist()),
        "index_build_s": round(build_s, 2),
        "index_mb": round((args.bank_size * 52 + 16 * 65537 * 8) / 2**20, 1),
    }
    log(f"speed: {result}")
    return result


def main() -> int:
    """Run every part and write hashes.json."""
    args = parse_args()
    random.seed(args.seed)
    machine = machine_info()
    started = time.monotonic()
    results = {"machine": machine, "config": {k: str(v) for k, v in vars(args).items()}}
    results.update(robustness(args))
    results.update(speed(args))
    if not args.skip_desk:
        from bench.harness import hash_desk

        results.update(hash_desk.run(args, work=REPO / "var" / "bench-hashes"))
    results["seconds"] = round(time.monotonic() - started, 1)
    write_json(args.out / "hashes.json", results)
    log(f"wrote {args.out / 'hashes.json'} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
