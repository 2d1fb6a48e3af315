"""Why a camera URL would not open: a short, specific reason for its status.

OpenCV only says that opening failed. Before a camera is reported offline, one cheap
probe tells the operator which of the usual causes it is: a bad URL, a host that does
not resolve or refuses, wrong credentials, or a server that answers with no video.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
VIDEO_CONTENT = ("image/", "video/", "multipart/", "application/octet-stream")


def diagnose(url: str, timeout_s: float) -> str:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return "invalid URL: expected rtsp://, http:// or https:// with a host, or a video file path"
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        return f"host {parts.hostname} not found"
    except ConnectionRefusedError:
        return f"connection refused by {parts.hostname}:{port}"
    except OSError as error:
        return f"{parts.hostname}:{port} unreachable ({type(error).__name__})"
    if parts.scheme.startswith("http"):
        return _diagnose_http(url, timeout_s)
    return "the server answered but no video stream opened (wrong path or credentials?)"


def _diagnose_http(url: str, timeout_s: float) -> str:
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            status, content_type = response.status_code, response.headers.get("content-type", "")
    except httpx.HTTPError as error:
        return f"HTTP request failed ({type(error).__name__})"
    if status in (401, 403):
        return f"wrong or missing credentials (HTTP {status})"
    if status >= 400:
        return f"HTTP {status} from the camera URL"
    if not content_type.startswith(VIDEO_CONTENT):
        return f"not a video stream (content type {content_type.split(';')[0] or 'unknown'})"
    return "the server sent video that could not be decoded"
