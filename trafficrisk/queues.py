"""Celery queue names, shared by celeryconfig, the tasks and the web's /metrics."""

DETECT_QUEUE = "detect"
LLM_HIGH_QUEUE = "llm.high"
LLM_LOW_QUEUE = "llm.low"
# The broker serves a worker's queues in name order (celeryconfig): llm.high sorts first.
AGGREGATE_QUEUE = "aggregate"
# What follows an alert (its clip, its webhooks): slow or hanging work kept off aggregate.
ALERTS_QUEUE = "alerts"
QUEUES = (DETECT_QUEUE, LLM_HIGH_QUEUE, LLM_LOW_QUEUE, AGGREGATE_QUEUE, ALERTS_QUEUE)
