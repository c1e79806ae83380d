"""The service's own domain errors, free of any web framework.

The batcher, the inference path and the model pool raise these; `app/errors.py` is the one place that
maps them (and `model/`'s and `app/imaging.py`'s errors) to HTTP answers.
"""

from __future__ import annotations

import re

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"]+/)+([^\s/:'\"]*)")


class ServiceError(Exception):
    """Base of the service's own domain errors."""


class InvalidInput(ServiceError, ValueError):
    """A field is well-formed but does not fit the model (e.g. `style` of the wrong length)."""


class PayloadTooLarge(ServiceError):
    """The request body exceeds `max_body_bytes`."""


class BodyTimeout(ServiceError):
    """The request body did not fully arrive within `body_timeout_s` (a stalled or trickling client)."""


class Overloaded(ServiceError):
    """The inference queue cannot take this work in time; the client should retry shortly."""


class InferenceTimeout(ServiceError):
    """The request did not get its result within `request_timeout_s`."""


class ClientGone(ServiceError):
    """The client closed its connection before its answer was ready (its work was dropped)."""


class NotReady(ServiceError):
    """No model is loaded to serve the request (empty registry, unloadable active version, shutdown)."""


def redact(text: str) -> str:
    """Strip directories from absolute paths in a message: clients learn the file, not the layout."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", text)
