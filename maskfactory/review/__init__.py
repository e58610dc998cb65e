"""Review queues: the queue store, the HTTP review service and its web page."""
