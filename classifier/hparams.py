"""Hyper-parameters of one training run, in one frozen dataclass so a run can be recorded and repeated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class HParams:
    """Everything that decides what a training run produces; the defaults keep retraining cheap.

    Defaults train a softmax head on cached features of the frozen backbone, so a warm retrain only embeds new
    images: region-pooled features of two middle blocks (cheaper than the whole network and better on small
    product photos), of which cross-validation on the training split picks the input size, the blocks, the
    pooling and the L2 penalty per run, mirrored training copies, standardised features, and out-of-distribution
    negatives on the allowed side. On Fashion-MNIST Pullover vs Coat the hidden layer, fine-tuning and
    distortions did not beat this within noise (docs/classifier.md has the figures), so they stay opt-in.
    """

    backbone: str = "mobilenet_v1"
    # The input size the model is built at. None: chosen by cross-validation among the backbone's candidate sizes
    # (selection.IMAGE_SIZE_CANDIDATES, the native size first), or the native size when nothing is chosen. A size
    # given here is fixed, unless `cv_image_sizes` names candidates: then it is the first of them, and kept unless
    # another wins by more than the fold noise (selection.size_hysteresis).
    image_size: int | None = None
    # Layer whose pooled output is the feature vector, or several joined by "+" (concatenated): None = the
    # backbone's default (backbones.DEFAULT_FEATURE_LAYERS: middle blocks of mobilenet_v1), "output" = its
    # final pooled output.
    feature_layer: str | None = None
    # How each feature layer's map is pooled (backbones.POOLINGS): None = the backbone's default ("symmetric"
    # region averages for mobilenet_v1, one global average otherwise).
    pooling: str | None = None
    # Also train on each training image's mirror image; its features are cached beside the original's.
    mirror: bool = True
    # Standardise features inside the head (a Normalization layer adapted on the training features, saved in
    # the model), so the L2 penalty weighs every feature alike whatever its scale. None = the backbone's default
    # (on for ImageNet backbones, off for the random `tiny` one, whose noise channels it would amplify).
    standardize: bool | None = None
    # Add photos of nothing prohibited to the allowed side of training (`classifier.negatives`): synthetic blanks,
    # splits, gradients, stripes and noise (`ood_synthetic` of them) and the installed real photos of other
    # subjects that are not on the test side of their own split. A model that has only seen products calls
    # anything unfamiliar a product (a solid blue rectangle scored 1.000 for Pullover). None = the backbone's
    # default (on for ImageNet backbones, off for the random `tiny` one of the tests). Needs an allowed label.
    ood_negatives: bool | None = None
    ood_synthetic: int = 60
    # The negatives' total weight as a share of the allowed label's own training examples' (each weighs at most
    # 1): they only need to pull photos far from every product to the allowed side; more weight takes it from the
    # look-alikes that decide accuracy. Chosen on training data by `bench/ood_share.py` (never the test split):
    # the largest share with the best validation accuracy within 0.005 among those that leave no held-out photo of
    # other things scored prohibited (0.1 left 4 of 85 flagged, 0.3 none, at 0.905 / 0.903 accuracy).
    ood_share: float = 0.3
    # Model choices by k-fold cross-validation on the training split (`classifier.selection`): which feature layers
    # and pooling among `cv_features` (each "layers:pooling"; empty = the backbone's candidates,
    # selection.FEATURE_CANDIDATES) when `feature_layer` and `pooling` are left to the defaults, together with
    # the L2 strength among `cv_l2`. Folds follow each image's split key, so a retrain on the same images chooses
    # the same; at most `cv_max_images` training images take part (the same ones each time, by hash), and no test or
    # validation image ever does. None = the backbone's default (3 folds for ImageNet backbones, off for `tiny`);
    # 0 = off: the features and l2 as given.
    cv_folds: int | None = None
    cv_features: tuple[str, ...] = ()
    # The L2 grid; cross-validation steps past its edge by its own ratio while the best value sits on it.
    cv_l2: tuple[float, ...] = (0.003, 0.01, 0.03)
    cv_max_images: int = 1000
    # Input sizes cross-validation chooses among, with `image_size` first when one is given (see
    # `image_size_candidates`). None: the backbone's candidates when `image_size` is None, else that size alone;
    # () fixes the size. A trained model records the size it chose in `image_size` and these candidates here,
    # so a retrain with its hyper-parameters chooses again among the same sizes, starting from the one it kept.
    cv_image_sizes: tuple[int, ...] | None = None
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 0.003
    momentum: float = 0.9
    early_stopping_patience: int = 10
    test_share: float = 0.3
    # A share of all images, carved out of the non-test part.
    validation_share: float = 0.1
    class_weights: bool = True
    # How examples' own weights (e.g. inverse-propensity weights of reviewed decisions) enter training: "loss"
    # scales each example's loss by its weight; "bias" trains the head unweighted and then refits only its output
    # biases with the weights (heads.refit_output_bias): unbiased where the boundary sits, without the heavy
    # weights' variance in the features it learns. Without example weights the refit barely moves the biases.
    example_weighting: str = "loss"
    # With "bias" weighting: 0 refits the biases on the head's own training and validation log-probabilities;
    # K >= 2 refits them on out-of-fold ones instead, each training image scored by a head trained without its
    # fold (K more head fits, seconds on cached features). A head fits its own training images better than new
    # ones, so the few heavy audit items it has fitted stop pulling the boundary towards them.
    bias_folds: int = 0
    # With "bias" weighting and bias_folds >= 2, choose l2 from these values by the out-of-fold weighted
    # cross-entropy (cross-validation on the training images; only up to heads.L2_SEARCH_MAX_IMAGES). Empty:
    # use l2 as given.
    l2_grid: tuple[float, ...] = ()
    # With "bias" weighting and bias_folds >= 2, average the fold heads (already trained for the bias refit) into
    # the final head, each head's logits counting alike (bagging). A head trained on a few hundred decisions
    # swings from one retrain to the next; the average of six swings less. Needs a plain softmax head
    # (hidden_units 0), whose logits are linear in the features, so the average is again one such head.
    average_fold_heads: bool = False
    # Distortions, as in retrain.py: applied to training images only, each epoch, bypassing the feature cache.
    distort: bool = False
    crop_fraction: float = 0.1
    scale_fraction: float = 0.1
    brightness_fraction: float = 0.2
    flip: bool = True
    # Head on the pooled features: 0 hidden units is a plain softmax (logistic) layer.
    hidden_units: int = 0
    dropout: float = 0.0
    l2: float = 0.01
    # Fine-tuning of the top K backbone layers (BatchNorm stays frozen) after the head has been trained.
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 0.001
    seed: int = 0
    # A local ImageNet weights file for the backbones that load one (backbones.accepts_weights_file); None:
    # Keras' download. The only way a weights file reaches a backbone: the library reads no environment.
    backbone_weights: str | None = None

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if not (
            0 <= self.test_share < 1 and 0 <= self.validation_share < 1 and self.test_share + self.validation_share < 1
        ):
            raise ValueError("test_share and validation_share must be in [0, 1) and leave room for training")
        if self.example_weighting not in ("loss", "bias"):
            raise ValueError(f"example_weighting must be 'loss' or 'bias', got {self.example_weighting!r}")
        if any(not isinstance(value, int | float) or value < 0 for value in self.l2_grid):
            raise ValueError(f"l2_grid must hold non-negative numbers, got {self.l2_grid!r}")
        object.__setattr__(self, "l2_grid", tuple(float(value) for value in self.l2_grid))
        if self.bias_folds < 0 or self.bias_folds == 1:
            raise ValueError(f"bias_folds must be 0 or at least 2, got {self.bias_folds}")
        if self.average_fold_heads and self.hidden_units:
            raise ValueError("average_fold_heads needs a plain softmax head (hidden_units 0)")
        if self.pooling is not None:
            from classifier.backbones import POOLINGS

            if self.pooling not in POOLINGS:
                raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.cv_folds is not None and (self.cv_folds < 0 or self.cv_folds == 1):
            raise ValueError(f"cv_folds must be 0 or at least 2, got {self.cv_folds}")
        if self.cv_max_images < 2 or any(not isinstance(v, int | float) or v < 0 for v in self.cv_l2):
            raise ValueError("cv_max_images must be at least 2 and cv_l2 hold non-negative numbers")
        object.__setattr__(self, "cv_l2", tuple(float(value) for value in self.cv_l2))
        object.__setattr__(self, "cv_features", tuple(str(value) for value in self.cv_features))
        if self.cv_image_sizes is not None:
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 16 for v in self.cv_image_sizes):
                raise ValueError(f"cv_image_sizes must hold sizes of at least 16, got {self.cv_image_sizes!r}")
            object.__setattr__(self, "cv_image_sizes", tuple(self.cv_image_sizes))
        if self.ood_synthetic < 0 or not 0 < self.ood_share <= 1:
            raise ValueError("ood_synthetic must be >= 0 and ood_share in (0, 1]")
        if self.fine_tune_layers < 0 or self.hidden_units < 0 or not 0 <= self.dropout < 1:
            raise ValueError("fine_tune_layers and hidden_units must be >= 0, dropout in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Every hyper-parameter by name, as hparams.json records it (`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HParams:
        """Build from a dict such as hparams.json; an unknown key is an error so typos never pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown hyper-parameters: {', '.join(unknown)}")
        return cls(**data)

    def resolved_cv_folds(self) -> int:
        """Folds of the cross-validated model choices: the configured number, else the backbone's default."""
        if self.cv_folds is not None:
            return self.cv_folds
        return 0 if self.backbone == "tiny" else 3

    def feature_candidates(self) -> list[tuple[str, str]]:
        """``(feature layers, pooling)`` pairs cross-validation chooses among; empty when the features are fixed.

        Features are fixed when cross-validation is off, when the hyper-parameters name a feature layer or a
        pooling, and for fine-tuning or distortions (their features do not come from the cache).
        """
        if (
            not self.resolved_cv_folds()
            or self.feature_layer
            or self.pooling is not None
            or self.distort
            or self.fine_tune_layers
        ):
            return []
        from classifier.selection import FEATURE_CANDIDATES, parse_candidate

        return [parse_candidate(text) for text in (self.cv_features or FEATURE_CANDIDATES.get(self.backbone, ()))]

    def image_size_candidates(self) -> list[int]:
        """The input sizes cross-validation chooses among, the one a tie keeps first; one size when it is fixed.

        The size is fixed when cross-validation is off and for fine-tuning or distortions (their features do not
        come from the cache, where every candidate size keeps its own), and when the hyper-parameters give a size
        and no candidates (`cv_image_sizes`).
        """
        fixed = [self.resolved_image_size()]
        if not self.resolved_cv_folds() or self.distort or self.fine_tune_layers:
            return fixed
        if self.cv_image_sizes is None:
            if self.image_size is not None:
                return fixed
            from classifier.selection import IMAGE_SIZE_CANDIDATES

            sizes = IMAGE_SIZE_CANDIDATES.get(self.backbone, ())
        else:
            sizes = self.cv_image_sizes
        ordered = list(dict.fromkeys([*([self.image_size] if self.image_size is not None else []), *sizes]))
        return ordered or fixed

    def resolved_feature_layer(self) -> str:
        """The feature layer actually used: the configured one, the candidates' union, or the backbone's default.

        With feature candidates the backbone embeds every candidate's layers, region-pooled (the union), once:
        each candidate's features are then columns of that vector or averages of them, so choosing among them
        costs no second pass through the backbone and the cache holds one vector per image.
        """
        if self.feature_layer:
            return self.feature_layer
        if candidates := self.feature_candidates():
            from classifier.selection import union_layers

            return union_layers(candidates)
        from classifier.backbones import default_feature_layer

        return default_feature_layer(self.backbone)

    def resolved_pooling(self) -> str:
        """The pooling actually used: the configured one, else the backbone's default for its default layers.

        A feature layer named explicitly without a pooling gets a global average, as before pooling was a choice,
        so saved hyper-parameters that name a layer keep meaning the same features.
        """
        if self.pooling is not None:
            return self.pooling
        if self.feature_layer:
            return "average"
        if self.feature_candidates():
            return "symmetric"
        from classifier.backbones import default_pooling

        return default_pooling(self.backbone)

    def resolved_standardize(self) -> bool:
        """Whether the head standardises its features: the configured choice or the backbone's default."""
        if self.standardize is not None:
            return self.standardize
        from classifier.backbones import default_standardize

        return default_standardize(self.backbone)

    def resolved_ood_negatives(self) -> bool:
        """Whether training adds out-of-distribution negatives: the configured choice or the backbone's default."""
        if self.ood_negatives is not None:
            return self.ood_negatives
        return self.backbone != "tiny"

    def resolved_image_size(self) -> int:
        """The input size actually used: the configured one or the backbone's native size."""
        if self.image_size is not None:
            return self.image_size
        from classifier.backbones import native_size

        return native_size(self.backbone)
