"""The Celery application every worker, the capture process and Flower share."""

from celery import Celery

app = Celery(
    "trafficrisk",
    include=["trafficrisk.tasks.detect", "trafficrisk.tasks.assess", "trafficrisk.tasks.aggregate",
             "trafficrisk.tasks.evidence", "trafficrisk.tasks.webhook", "trafficrisk.tasks.verification"],
)
app.config_from_object("trafficrisk.celeryconfig")
