"""Thin Celery tasks; the logic they call lives in trafficrisk.workers."""
