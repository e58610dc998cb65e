"""Prefect tasks the flows compose: discovery, the Ray labelling stage, routing, table writes, queues."""
