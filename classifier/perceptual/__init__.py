"""Perceptual hashes of photos and exact near-duplicate search over them; never imports Django or the model code.

A sub-package of its own because it is not a model: a PDQ hash (`pdq`, its arithmetic in `pdqmath`) says which
photos are the same picture re-encoded, resized, cropped, brightened, mirrored or rotated, and the index (`index`)
answers "every known hash within distance d" exactly. The desk uses both for its hash banks, the review queue's
grouping and the training split; benchmarks and tests use them without a database.
"""
