"""Training: shared features, Ray Data pipeline, Ray Train/Tune sweeps, evaluation, model registry.

- :mod:`train.features`  — the one feature definition (stream and batch)
- :mod:`train.dataset`   — read, validate, features per sensor on Ray Data, split by time
- :mod:`train.models`    — model families of a sweep (LightGBM, random forest, logistic regression)
- :mod:`train.distributed` — data-parallel LightGBM on Ray Train (V2)
- :mod:`train.sweep`     — the Ray Tune sweep (function trainables)
- :mod:`train.evaluate`, :mod:`train.report` — metrics, threshold, time-to-detect, plots, Markdown
- :mod:`train.drift`     — reference distributions and PSI
- :mod:`train.registry`  — versioned models and the production alias
- :mod:`train.pipeline`  — one run end to end (``train_and_register``; ``smoke train`` calls it)
- :mod:`train.model_watch` — hot reload: follow a registry reference (stream workers and Serve)
"""
