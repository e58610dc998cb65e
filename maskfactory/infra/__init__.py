"""Settings, storage (fsspec URIs, Delta tables, checkpoints), masks, images and the Ray runtime."""
