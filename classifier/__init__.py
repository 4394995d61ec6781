"""Vigia's image classifier: transfer learning on a frozen ImageNet backbone, cached retraining, a model registry.

Importing this package is cheap on purpose: TensorFlow is imported lazily inside the functions that need it, so
Celery's prefork parent never runs a TensorFlow op before forking its children.
"""
