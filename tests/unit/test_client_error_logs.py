"""A malformed request is the client's error, answered 400: aiohttp logged every one (bad
request line, header or Content-Encoding, an undecodable body) at error level with a traceback,
so any client could fill the log of any promring HTTP server (found fuzzing the querier's HTTP
front). Like Go's net/http they are logged at debug level only; the server's own failures are
still errors."""
from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from common.logs import setup_logging


def _log(exc: BaseException) -> None:
    try:
        raise exc
    except BaseException:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("exc", [BadHttpMessage("Duplicate 'Transfer-Encoding' header found."),
                                 ContentEncodingError("Can not decode content-encoding: gzip"),
                                 RequestPayloadError("Can not decode content-encoding: br")])
def test_client_errors_are_not_logged_above_debug(capsys, restore_logging, exc):
    setup_logging("info")
    _log(exc)
    assert capsys.readouterr().err == ""
    setup_logging("debug")
    _log(exc)
    err = capsys.readouterr().err
    assert "level=debug" in err and "Error handling request" in err


def test_server_failures_are_still_errors(capsys, restore_logging):
    setup_logging("info")
    _log(RuntimeError("a bug of ours"))
    err = capsys.readouterr().err
    assert "level=error" in err and "a bug of ours" in err
