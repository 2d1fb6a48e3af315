"""Which camera URLs the fleet may open: a camera URL is typed by people, and a reader
opens whatever it says from inside the network, so it is checked before any reader
touches it (docs/operations.md, "Camera URLs").

Allowed: `rtsp`, `rtsps`, `http` and `https` URLs whose host is not this machine, a
link-local address or a cloud's metadata service (unless an allowed network says so;
cameras on private networks are the normal case and need nothing), video files under
the media folders, and local devices only when allowed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SCHEMES = ("rtsp", "rtsps", "http", "https")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services outside the link-local range (AWS's IPv6 one).
METADATA = (ipaddress.ip_network("fd00:ec2::254/128"),)


# Query parameters that carry a secret (`?token=...`, `&password=...`): masked like a password.
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:[^=&;#]*(?:pass|pwd|token|secret|key|auth|sig|credential)[^=&;#]*)=)[^&;#]*"
)
# The user info's password runs to the host's last `@` (people type raw `@` in passwords).
_USER_INFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/]*@")


def mask_url(url: str) -> str:
    """The URL with any password (in its user info or its query) replaced, fit for logs
    and pages; never raises, whatever the URL (a port out of range, stray brackets)."""
    return _SECRET_QUERY.sub(r"\1***", _USER_INFO.sub(r"\1:***@", url))


def is_device_source(url: str) -> bool:
    """A local camera: `/dev/videoN` or `device:N` (OpenCV's index)."""
    return url.startswith(("/dev/video", "device:"))


def is_file_source(url: str) -> bool:
    return not is_device_source(url) and ("://" not in url or url.startswith("file://"))


class CameraUrlError(ValueError):
    """A camera URL the fleet will not open; the message says why (the password masked)."""


def resolve(host: str) -> list[str]:
    """The host's addresses; none when it does not resolve (the reader then says so)."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []


@dataclass(frozen=True)
class UrlPolicy:
    media_folders: tuple[Path, ...]
    allow_devices: bool = False
    allowed_networks: tuple[Network, ...] = ()
    resolver: Callable[[str], list[str]] = field(default=resolve, compare=False)

    @classmethod
    def from_settings(
        cls, media_folders: Sequence[Path], allow_devices: bool, allowed_networks: Sequence[str]
    ) -> UrlPolicy:
        folders = tuple(folder.expanduser().resolve() for folder in media_folders)
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        return cls(folders, allow_devices, networks)

    def check(self, url: str) -> None:
        """CameraUrlError with the reason when the fleet may not open `url`."""
        if is_device_source(url):
            if not self.allow_devices:
                raise CameraUrlError(f"{url}: local devices are off (TRAFFICRISK_ALLOW_DEVICES)")
            return
        if "\x00" in url:  # no file name, host or path can hold one; os calls raise on it
            raise CameraUrlError(f"{mask_url(url)!r}: contains a NUL character")
        if "://" not in url:
            self._check_file(url)
            return
        shown = mask_url(url)
        try:
            parts = urlsplit(url)
        except ValueError:  # an unclosed `[`, or a bracketed host that is no IP address
            raise CameraUrlError(f"{shown}: not a valid URL") from None
        if parts.scheme.lower() not in SCHEMES:
            raise CameraUrlError(
                f"{shown}: the scheme must be one of {', '.join(SCHEMES)} "
                "(a video file is a path under the media folders)"
            )
        try:
            parts.port  # noqa: B018 - it raises for a port out of range
        except ValueError:
            raise CameraUrlError(f"{shown}: invalid port") from None
        if not parts.hostname:
            raise CameraUrlError(f"{shown}: no host")
        self._check_host(parts.hostname, shown)

    def _check_file(self, path: str) -> None:
        try:
            resolved = Path(path).expanduser().resolve()  # symlinks followed: where it really is
        except RuntimeError:  # `~someone/...` for a user this machine does not have
            raise CameraUrlError(f"{path}: no such home directory") from None
        if not any(resolved.is_relative_to(folder) for folder in self.media_folders):
            raise CameraUrlError(
                f"{path}: a video file must be under the media folders (TRAFFICRISK_MEDIA_FOLDERS)"
            )

    def _check_host(self, host: str, shown: str) -> None:
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host)]
        for address in addresses:
            reason = _forbidden(address)
            if reason and not any(address in network for network in self.allowed_networks):
                raise CameraUrlError(
                    f"{shown}: {host} is {reason} (allow it with TRAFFICRISK_CAMERA_ALLOW_NETWORKS)"
                )


def _forbidden(address: Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return "this machine"
    if address.is_link_local or any(address in network for network in METADATA):
        return "a link-local or cloud metadata address"
    if address.is_multicast:
        return "a multicast address"
    return None
