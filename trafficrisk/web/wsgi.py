"""gunicorn entry point: `gunicorn -w 1 --threads 100 trafficrisk.web.wsgi:app`."""

from trafficrisk.web.app import create_app

app, socketio = create_app()
