"""The web process: dashboard, REST API, Socket.IO and /metrics.

Never imports the detection or LLM engines: it reads Redis, listens to the Socket.IO
message queue, and sends only webhook tasks (`tasks.webhook`, which loads no model).
"""
