"""Errors that carry the gRPC status code a client should see."""

from __future__ import annotations

import grpc


class MonitorError(Exception):
    """Bad input from a client. ``code`` is the gRPC status to answer with."""

    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


def invalid(message: str) -> MonitorError:
    return MonitorError(message, grpc.StatusCode.INVALID_ARGUMENT)
