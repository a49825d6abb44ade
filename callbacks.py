"""Signed job callbacks: a JSON POST to the job's callback_url, HMAC-SHA256 of the exact body, retried.

Receivers check `X-CEC-Signature: sha256=<hex>` against HMAC-SHA256(job secret, raw body).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

SIGNATURE_HEADER = "X-CEC-Signature"
EVENT_HEADER = "X-CEC-Event"


def sign(secret: str, body: bytes) -> str:
    """The signature header value for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is the body's signature under `secret` (constant-time comparison)."""
    return bool(header) and hmac.compare_digest(sign(secret, body), header)


def private_target(url: str) -> str | None:
    """Why `url` must not be called from a production server (it resolves to a loopback, private, link-local or
    reserved address: the internal network, or a cloud metadata service), or None if it is public."""
    host = urlsplit(url).hostname
    if not host:
        return "no host in the URL"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            return f"{host} resolves to a non-public address ({ip})"
    return None


@dataclass(frozen=True)
class Delivery:
    """The outcome of a callback: the final HTTP status (or the error) and how many attempts it took."""

    ok: bool
    status: str
    attempts: int


@dataclass
class CallbackSender:
    """POSTs signed callbacks with a timeout, retrying on failure with exponential backoff."""

    timeout: tuple[float, float] = (3.05, 10.0)
    attempts: int = 3
    backoff: float = 1.0
    session: requests.Session | None = None
    allow_private: bool = True  # production sets False: no callbacks into the internal network

    def send(self, url: str, secret: str, event: str, payload: dict) -> Delivery:
        """Deliver one callback; a 2xx answer is success."""
        if not self.allow_private:
            refused = private_target(url)
            if refused:
                return Delivery(False, f"refused: {refused}", 0)
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body), EVENT_HEADER: event}
        session = self.session or requests.Session()
        status = "not sent"
        for attempt in range(1, self.attempts + 1):
            try:
                response = session.post(url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False)
                status = f"HTTP {response.status_code}"
                if 200 <= response.status_code < 300:
                    return Delivery(True, status, attempt)
            except requests.RequestException as exc:
                status = f"{exc.__class__.__name__}: {exc}"[:200]
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(False, status, self.attempts)
