"""Celery queue names, shared by celeryconfig, the tasks and the web's /metrics."""

DETECT_QUEUE = "detect"
LLM_HIGH_QUEUE = "llm.high"
LLM_LOW_QUEUE = "llm.low"
AGGREGATE_QUEUE = "aggregate"
QUEUES = (DETECT_QUEUE, LLM_HIGH_QUEUE, LLM_LOW_QUEUE, AGGREGATE_QUEUE)
