"""Prefect flows, one file each (label_dataset, nightly_relabel, ...). Flows stay thin: they compose tasks."""
