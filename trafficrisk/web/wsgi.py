"""gunicorn entry point: `gunicorn -w 1 -k gevent trafficrisk.web.wsgi:app` (trafficrisk web)."""

from trafficrisk.web.app import create_app

app, socketio = create_app()
