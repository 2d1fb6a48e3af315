"""assess: one group's LLM verdict; always returns, so the chord always fires."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from trafficrisk.messages import AssessRequest
from trafficrisk.runtime import get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.workers.assessment import assess_safely
from trafficrisk.workers.llm import LlmClient

log = logging.getLogger(__name__)


@cache
def get_llm_client() -> LlmClient | None:
    settings = get_settings()
    return LlmClient.from_settings(settings) if settings.is_llm_enabled else None


@app.task(name="trafficrisk.assess")
def assess_group(request: dict[str, Any]) -> dict[str, Any]:
    parsed = AssessRequest.from_wire(request)
    return assess_safely(parsed, get_store().get_blob, get_llm_client()).to_wire()
