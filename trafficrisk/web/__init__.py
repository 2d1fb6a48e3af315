"""The web process: dashboard, REST API, Socket.IO and /metrics.

Never imports the detection engine or the Celery tasks: it reads Redis and listens
to the Socket.IO message queue.
"""
