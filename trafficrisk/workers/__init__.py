"""Plain-Python engines: no celery, redis or flask imports here."""
