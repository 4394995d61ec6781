"""Model choices by k-fold cross-validation on the training split: input size, feature layers, pooling and L2.

The defaults fixed the feature layers, their pooling and the L2 strength once, from measurements on one test
set; a marketplace's data is not that test set. Each training run now chooses them among a few candidates by
cross-validation on its own training images (`HParams.cv_folds`), and records the candidates, every fold's score
and the choice (`TrainingResult.chosen_by_cv`, shown on the version's page). Nothing here ever sees a
validation or test image, so a test figure stays an honest estimate.

It stays cheap because no candidate needs a second pass through the backbone: the backbone embeds the union of
the candidates' layers with region ("symmetric") pooling, and each candidate is a linear map of that vector (a
selection of columns, or for a global average the area-weighted mean of a layer's four regions). The candidates
are compared by an L2-regularised softmax regression trained to convergence on each fold
(`classifier.fold_regression`, on at most `HParams.cv_max_images` images): the same objective the head's SGD
minimises (class-balanced, weighted cross-entropy plus l2 times the squared kernel), without its early-stopping
noise. The head is then trained on the chosen candidate's features as before, and written back as a head on the
union's features (`expand_head`), so the saved model, its cache and its LiteRT extractor keep one shape whatever
was chosen.

The input size is the one choice that does need another pass: each candidate size has its own features, cached
under its own size (`classifier.size_selection` embeds the cross-validation images at every candidate size).
The sizes and the feature candidates are compared together, every feature candidate at every size, on the
same images and folds; the model is then built at the chosen size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from classifier.fold_regression import fit_softmax, standardise
from classifier.hparams import HParams

#: Candidates per backbone, ``"layers:pooling"``, the default first (a tie keeps it). MobileNet V1's are blocks
#: 9 and 11, the default's own union, so the cache of the default features serves every candidate.
FEATURE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "mobilenet_v1": (
        "conv_pw_9_relu+conv_pw_11_relu:symmetric",
        "conv_pw_11_relu:symmetric",
        "conv_pw_9_relu:symmetric",
        "conv_pw_9_relu+conv_pw_11_relu:average",
        "conv_pw_11_relu:average",
    ),
}

#: Input sizes per backbone, the native size first (a tie keeps it). MobileNet V1 was published for inputs of
#: 224, 192, 160 and 128 px (its resolution multiplier); the candidates are the two ends of that range. A
#: smaller input is worth trying because product photos are often small (a marketplace thumbnail, Fashion-MNIST's
#: 28 px) and blowing them up to 224 px changes the scale at which the middle blocks' filters meet them; which
#: scale suits a data set is an empirical question, so its own training folds answer it. Two sizes, not four: the
#: sizes between lie inside the range the two bracket, and every candidate size costs an embedding of the
#: cross-validation images (`HParams.cv_max_images`) and its share of the fold fits in every retrain. 128 px
#: costs about a third of 224 px per image ((128 / 224)^2), so the second size adds about a third of the
#: cross-validation images' embedding, and only for images not cached at that size yet.
IMAGE_SIZE_CANDIDATES: dict[str, tuple[int, ...]] = {"mobilenet_v1": (224, 128)}

#: What the folds are judged by: held-out class-balanced cross-entropy (accuracy is recorded beside it).
CRITERION = "class-balanced cross-entropy on held-out folds (lower is better)"

_REGIONS = 4  # symmetric pooling: top middle, top outer, bottom middle, bottom outer


def parse_candidate(text: str) -> tuple[str, str]:
    """``"a+b:pooling"`` as ``("a+b", "pooling")``; ValueError for anything else."""
    from classifier.backbones import POOLINGS

    layers, _, pooling = text.rpartition(":")
    if not layers or pooling not in POOLINGS or "output" in layers.split("+"):
        raise ValueError(f"feature candidate {text!r} must be 'layer[+layer...]:pooling' with pooling in {POOLINGS}")
    return layers, pooling


def union_layers(candidates: Sequence[tuple[str, str]]) -> str:
    """Every layer the candidates name, in order of first mention, joined by "+" (what the backbone embeds)."""
    seen: list[str] = []
    for layers, _ in candidates:
        seen.extend(name for name in layers.split("+") if name not in seen)
    return "+".join(seen)


@dataclass(frozen=True)
class Candidate:
    """One feature candidate as a map of the union's columns: column ``source[j, r]`` times ``weight[j, r]``."""

    name: str
    source: np.ndarray
    weight: np.ndarray
    identity: bool

    def apply(self, x: np.ndarray | None) -> np.ndarray | None:
        """The candidate's features of rows of union features."""
        if x is None or self.identity:
            return x
        if self.source.shape[1] == 1:
            return np.ascontiguousarray(x[:, self.source[:, 0]])
        return np.einsum("njr,jr->nj", x[:, self.source], self.weight, dtype=np.float32)

    def back_project(self, kernel: np.ndarray, union_dim: int) -> np.ndarray:
        """A kernel on the union's columns giving the same products as ``kernel`` on the candidate's features."""
        if self.identity:
            return kernel
        out = np.zeros((union_dim, kernel.shape[1]), dtype=np.float64)
        np.add.at(out, self.source.ravel(), (self.weight[..., None] * kernel[:, None, :]).reshape(-1, kernel.shape[1]))
        return out


def candidates_on(backbone, hparams: HParams) -> list[Candidate]:
    """The hyper-parameters' feature candidates as maps of ``backbone``'s union features (its feature maps' sizes).

    With the features fixed, one candidate: the features as configured.
    """
    if not hparams.feature_candidates():
        name = f"{hparams.resolved_feature_layer()}:{hparams.resolved_pooling()}"
        return [Candidate(name, np.zeros((0, 1), dtype=np.int64), np.zeros((0, 1), dtype=np.float32), True)]
    union = hparams.resolved_feature_layer().split("+")
    offsets, shapes, offset = {}, {}, 0
    for name in union:
        _, height, width, channels = backbone.get_layer(name).output.shape
        offsets[name], shapes[name] = offset, (int(height), int(width), int(channels))
        offset += _REGIONS * int(channels)
    result = []
    for layers, pooling in hparams.feature_candidates():
        sources, weights = [], []
        for name in layers.split("+"):
            height, width, channels = shapes[name]
            base = offsets[name] + np.arange(channels)
            regions = [base + r * channels for r in range(_REGIONS)]
            if pooling == "symmetric":
                sources.extend(np.concatenate(regions)[:, None])
                weights.extend(np.ones((_REGIONS * channels, 1)))
            else:
                top, side = height // 2, width // 3
                areas = np.array([top * (width - 2 * side), top * 2 * side, (height - top) * (width - 2 * side)])
                areas = np.append(areas, (height - top) * 2 * side) / float(height * width)
                sources.extend(np.stack(regions, axis=1))
                weights.extend(np.tile(areas, (channels, 1)))
        source, weight = np.array(sources, dtype=np.int64), np.array(weights, dtype=np.float32)
        identity = pooling == "symmetric" and np.array_equal(source[:, 0], np.arange(offset))
        result.append(Candidate(f"{layers}:{pooling}", source, weight, bool(identity)))
    return result


def fold_of(split_key: str, folds: int) -> int:
    """An image's fold, from bits of its split key that the train/test split does not use (stable as data grows)."""
    return int(split_key[16:24], 16) % folds


def subsample_rank(split_key: str) -> int:
    """Where an image ranks for the cross-validation subsample (`HParams.cv_max_images`): more bits of its key."""
    return int(split_key[24:32], 16)


# ---------------------------------------------------------------------------------------------- the choice


#: How many ratio steps the L2 grid may grow past its edge (`extend_l2_grid`): 0.03 becomes at most 0.81.
L2_EXTENSION_STEPS = 3


def size_hysteresis(kept: dict, challenger: dict) -> dict:
    """Whether ``challenger`` (another size's best entry) beats the kept size's best by more than the fold noise.

    The rule: move only if the mean per-fold loss difference (challenger minus kept, paired by fold, since both
    are fitted and scored on the same folds) is below minus its standard error (sample standard deviation of the
    differences over the square root of the fold count). A move is costly (a retrain that moves embeds every
    image at the new size, over the retrain's time target) and a loss that wins by less than that could as well
    lose on the next draw of images; one standard error, not a significance test, because with three folds a
    t-test would keep the size against all but overwhelming wins. Pairing removes what the folds share (which
    images are hard), so a small win that every fold agrees on still moves.
    """
    differences = np.subtract(challenger["fold_scores"], kept["fold_scores"])
    mean = float(differences.mean())
    error = float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else 0.0
    return {
        "kept": kept["image_size"],
        "challenger": challenger["image_size"],
        "rule": "move if the mean per-fold loss difference is below minus its standard error",
        "mean_difference": round(mean, 5),
        "standard_error": round(error, 5),
        "moved": mean < -error,
    }


def extend_l2_grid(entries: list[dict], grid: Sequence[float], evaluate) -> list[float]:
    """Every L2 value tried, ascending, after growing the grid past its edge while the best entry sits on it.

    ``entries`` are the L2 values' entries so far (``evaluate(l2)`` appends one more). A best value at the top
    of the values tried says only that the optimum is at or above it (every run on the pairs benchmark chose
    0.03, the top of `HParams.cv_l2`, with the loss still falling), so the grid steps on by its own ratio at that
    end (0.03 / 0.01 = 3) until the best is interior, or `L2_EXTENSION_STEPS` steps were added; likewise below
    (never below a zero). The steps use the training folds only, like the rest of the choice.
    """
    steps = sorted({float(value) for value in grid if value > 0})
    if len(steps) < 2:
        return sorted({float(entry["l2"]) for entry in entries})
    up, down = steps[-1] / steps[-2], steps[1] / steps[0]
    for _ in range(L2_EXTENSION_STEPS):
        scored = [entry for entry in entries if entry["score"] is not None]
        if not scored:
            break
        best_l2 = min(scored, key=lambda entry: entry["score"])["l2"]
        values = sorted(entry["l2"] for entry in entries)
        if best_l2 == values[-1]:
            entries.append(evaluate(float(f"{values[-1] * up:.6g}")))
        elif best_l2 == values[0] and values[0] > 0:
            entries.append(evaluate(float(f"{values[0] / down:.6g}")))
        else:
            break
    return sorted({float(entry["l2"]) for entry in entries})


@dataclass
class Choice:
    """What cross-validation chose: size, feature candidate, the hyper-parameters with both and L2, the record.

    With several candidate sizes ``hparams`` records the chosen one as ``image_size`` and the candidates as
    ``cv_image_sizes``, so a retrain with them chooses again among the same sizes; with one size it is as given.
    """

    candidate: Candidate
    hparams: HParams
    record: dict
    image_size: int


def choose(
    features: Mapping[int, np.ndarray],
    y: np.ndarray,
    example_weights: np.ndarray,
    image_of_row: np.ndarray,
    split_keys: Sequence[str],
    n_labels: int,
    hparams: HParams,
    candidates: Mapping[int, list[Candidate]],
    *,
    choose_l2: bool = True,
) -> Choice:
    """Cross-validate every feature candidate at every size, each at every L2 value; the best of all wins.

    A size given in ``hparams`` among several (a retrain's previous size) is kept unless another wins by more
    than the fold noise (`size_hysteresis`); a first training chooses freely. The L2 grid grows past its edge
    while the best value sits on it (`extend_l2_grid`), for each candidate on its own. With ``choose_l2`` false
    the candidates are judged the same way, but the hyper-parameters keep ``hparams.l2``: an L2 search after the
    choice decides it (the platform's out-of-fold search, `heads.choose_l2`), and the record says so.

    ``features`` holds the training rows' union features by input size, in the order the sizes are tried (the
    first wins a tie), the same rows in the same order at every size; rows ``len(split_keys)`` and on are mirror
    copies, left out of the comparison. ``candidates`` are the feature candidates on each size's union.
    ``split_keys`` are the training images' keys, by image.
    """
    from classifier.fitting import sample_weights

    started = time.monotonic()
    folds = hparams.resolved_cv_folds()
    n_images = len(split_keys)
    keep = np.zeros(n_images, dtype=bool)
    keep[sorted(range(n_images), key=lambda i: subsample_rank(split_keys[i]))[: hparams.cv_max_images]] = True
    fold_of_image = np.array([fold_of(key, folds) for key in split_keys])
    # Originals only: a mirror copy would double the cost of every fit and tells the comparison little.
    rows = np.flatnonzero(keep[image_of_row] & (np.arange(len(image_of_row)) < n_images))
    fold_of_row = fold_of_image[image_of_row[rows]]
    original = rows < n_images
    y_rows, w_rows = y[rows], np.asarray(example_weights, dtype=np.float64)[rows]
    standardize = hparams.resolved_standardize()
    tried: list[dict] = []

    def prepare_folds(size: int, candidate: Candidate) -> list[dict]:
        """The candidate's standardised folds, each with room for its last fit (`evaluate` starts from it)."""
        x = candidate.apply(features[size][rows])
        per_fold = []
        for fold in range(folds):
            held = (fold_of_row == fold) & original
            fitted = fold_of_row != fold
            if not held.any() or len(np.unique(y_rows[fitted])) < 2:
                continue
            train_x, held_x = x[fitted], x[held]
            if standardize:
                train_x, held_x = standardise(train_x, held_x)
            # As the head learns: with "bias" weighting unweighted (the weights only move its biases afterwards).
            own = w_rows[fitted] if hparams.example_weighting == "loss" else None
            per_fold.append(
                {
                    "train_x": train_x,
                    "train_y": y_rows[fitted],
                    "weights": sample_weights(y_rows[fitted], n_labels, hparams, own).astype(np.float64),
                    "held_x": held_x,
                    "truth": y_rows[held],
                    "held_w": sample_weights(y_rows[held], n_labels, hparams, w_rows[held]).astype(np.float64),
                    "start": None,
                }
            )
        return per_fold

    def evaluate(size: int, candidate: Candidate, l2: float, per_fold: list[dict]) -> dict:
        losses, accuracies = [], []
        for fold in per_fold:
            kernel, bias = fit_softmax(
                fold["train_x"], fold["train_y"], fold["weights"], n_labels, l2, start=fold["start"]
            )
            fold["start"] = (kernel, bias)
            logits = (fold["held_x"] @ kernel.astype(np.float32) + bias).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            truth, held_w = fold["truth"], fold["held_w"]
            losses.append(float(-(held_w * log_p[np.arange(len(truth)), truth]).sum() / held_w.sum()))
            accuracies.append(float((held_w * (log_p.argmax(axis=1) == truth)).sum() / held_w.sum()))
        entry = {
            "image_size": size,
            "features": candidate.name,
            "l2": l2,
            "fold_scores": [round(v, 5) for v in losses],
            "fold_accuracy": [round(v, 4) for v in accuracies],
            "score": round(float(np.mean(losses)), 5) if losses else None,
        }
        tried.append(entry)
        return entry

    def best(entries: list[dict]) -> dict:
        scored = [entry for entry in entries if entry["score"] is not None]
        return min(scored, key=lambda entry: entry["score"]) if scored else entries[0]

    sizes = list(features)
    by_name = {size: {candidate.name: candidate for candidate in candidates[size]} for size in sizes}
    grids: dict[tuple[int, str], list[float]] = {}

    def evaluate_grid(size: int, candidate: Candidate) -> list[dict]:
        """The candidate at `hparams.l2` and at every value of `hparams.cv_l2` (grown past its edge).

        Its folds are prepared once for all the values, and each fit starts from the fold's fit at the value
        before (the objective is strictly convex, so the start changes the iterations needed, not the optimum).
        """
        per_fold = prepare_folds(size, candidate)
        entries = [evaluate(size, candidate, hparams.l2, per_fold)]
        if hparams.cv_l2:
            entries.extend(evaluate(size, candidate, l2, per_fold) for l2 in hparams.cv_l2 if l2 != hparams.l2)
            grids[size, candidate.name] = extend_l2_grid(
                entries, hparams.cv_l2, lambda l2: evaluate(size, candidate, l2, per_fold)
            )
        return entries

    # Every candidate at its own best L2: a wider feature vector needs more shrinkage, so comparing all of them at
    # one L2 would judge each by a penalty tuned for none (the pairs benchmark's winners all chose 0.03 or more).
    every = [entry for size in sizes for candidate in candidates[size] for entry in evaluate_grid(size, candidate)]
    chosen = best(every)
    # A size given among several candidates is the one a previous training chose (or the caller's): it is kept.
    kept = hparams.image_size if len(sizes) > 1 and hparams.image_size == sizes[0] else None
    size_rule = None
    if kept is not None and chosen["image_size"] != kept:
        best_kept = best([entry for entry in every if entry["image_size"] == kept])
        size_rule = size_hysteresis(best_kept, chosen)
        chosen = chosen if size_rule["moved"] else best_kept
    size = chosen["image_size"]
    grid = grids.get((size, chosen["features"]), [])
    candidate = by_name[size][chosen["features"]]
    record = {
        "folds": folds,
        "images": int(keep.sum()),
        "criterion": CRITERION,
        "image_sizes": sizes,
        "candidates": tried,
        "chosen": {"image_size": size, "features": candidate.name, "l2": chosen["l2"]},
        "seconds": round(time.monotonic() - started, 3),
    }
    if size_rule is not None:
        record["size_rule"] = size_rule
    if grid:
        record["l2_grid"] = grid
    if not choose_l2:
        # The features won at this L2; the head's own L2 is the later search's (`heads.choose_l2`).
        record["l2_chosen_after"] = True
    chosen_hparams = replace(hparams, l2=float(chosen["l2"])) if choose_l2 else hparams
    if len(sizes) > 1:
        chosen_hparams = replace(chosen_hparams, image_size=size, cv_image_sizes=tuple(sizes))
    return Choice(candidate, chosen_hparams, record, size)


def cross_validate(arrays, split_keys: Sequence[str], n_labels: int, hparams: HParams, backbone, *, choose_l2: bool):
    """`choose` at one size on a training run's arrays; the choice and the arrays as the chosen features."""
    size = hparams.resolved_image_size()
    choice = choose(
        {size: arrays.pooled_train},
        arrays.y_train,
        arrays.w_train,
        arrays.image_of_row,
        split_keys,
        n_labels,
        hparams,
        {size: candidates_on(backbone, hparams)},
        choose_l2=choose_l2,
    )
    return choice, chosen_features(choice, arrays)


def chosen_features(choice: Choice, arrays):
    """A training run's arrays (union features at the chosen size) as the chosen candidate's features."""
    if choice.candidate.identity:
        return arrays
    chosen = choice.candidate
    x_train, x_val = chosen.apply(arrays.pooled_train), chosen.apply(arrays.pooled_val)
    return replace(arrays, x_train=x_train, x_val=x_val, pooled_train=x_train, pooled_val=x_val)


def expand_head(head, candidate: Candidate, union_dim: int, hparams: HParams):
    """The same head as a head on the union's features: standardisation and selection folded into its first Dense.

    The head computes ``dense((candidate(x) - mean) / scale)`` first; that is linear in ``x``, so one Dense on the
    union features with kernel ``P^T (K / scale)`` and bias ``b - (mean / scale) K`` (P the candidate's map)
    gives the same outputs, behind an identity standardisation. Every later layer is copied as it is.
    """
    from classifier.model import build_head

    if candidate.identity:
        return head
    names = {layer.name for layer in head.layers}
    first = "head_hidden" if "head_hidden" in names else "head_softmax"
    kernel, bias = (w.astype(np.float64) for w in head.get_layer(first).get_weights())
    if "head_standardize" in names:
        normalization = head.get_layer("head_standardize")
        mean = np.asarray(normalization.mean, dtype=np.float64).reshape(-1)
        scale = np.maximum(np.sqrt(np.asarray(normalization.variance, dtype=np.float64).reshape(-1)), 1e-7)
        kernel, bias = kernel / scale[:, None], bias - (mean / scale) @ kernel
    expanded = build_head(union_dim, head.output_shape[-1], hparams)
    for layer in expanded.layers:
        if layer.name == first:
            layer.set_weights([candidate.back_project(kernel, union_dim).astype(np.float32), bias.astype(np.float32)])
        elif layer.weights and layer.name != "head_standardize":
            layer.set_weights(head.get_layer(layer.name).get_weights())
    return expanded
