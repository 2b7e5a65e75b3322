"""The data pipeline: datasets and their lists (dataset), augmentation (transform), seeded resumable sampling
(sampler) and the training/validation loaders built from a config (loaders)."""
