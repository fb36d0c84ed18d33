# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Error handling for every rtx.dr module, in one place.

Every failure a module reports answers three questions: which input, what is
wrong, and what to do about it. Code in module_utils raises :class:`RtxDrError`
(or a subclass) with ``msg`` (which input and what is wrong), ``hint`` (what
to do) and ``details`` (machine readable context). Modules never format
failures themselves; they call :func:`run_module` (or :func:`fail_from_exception`)
and the error is reported as::

    module.fail_json(msg=..., hint=..., **details)

Example module ``main()``::

    def main():
        module = AnsibleModule(argument_spec=..., supports_check_mode=True)
        run_module(module, gather)   # gather(module) -> dict of results
"""

from __future__ import annotations

import traceback

# Keys that AnsibleModule.fail_json()/exit_json() or the controller give a
# meaning to. A detail with one of these names is reported as detail_<name>
# instead, so that details can never hide or fake the outcome of a task.
_RESERVED_RESULT_KEYS = frozenset(
    (
        "msg",
        "hint",
        "failed",
        "changed",
        "skipped",
        "unreachable",
        "exception",
        "invocation",
        "warnings",
        "deprecations",
        "rc",
        "results",
        "ansible_facts",
        "_ansible_no_log",
    )
)


class RtxDrError(Exception):
    """An expected failure, described for the person running the playbook.

    :param msg: which input (module option, host, file...) and what is wrong with it.
    :param hint: what to do about it; optional.
    :param details: optional dict of JSON-serialisable context (e.g. ``{"login_host": "db1"}``)
        returned next to ``msg`` in the task result.
    """

    def __init__(self, msg, hint=None, details=None):
        super().__init__(msg)
        self.msg = msg
        self.hint = hint
        self.details = dict(details or {})

    def __str__(self):
        if self.hint:
            return "%s (hint: %s)" % (self.msg, self.hint)
        return self.msg

    def to_result(self):
        """Return the keyword arguments for ``module.fail_json()``."""
        result = {}
        for key, value in self.details.items():
            if key in _RESERVED_RESULT_KEYS:
                key = "detail_%s" % key
            result[key] = value
        result["msg"] = self.msg
        if self.hint:
            result["hint"] = self.hint
        return result


class MissingLibraryError(RtxDrError):
    """A Python library needed on the managed host cannot be imported."""

    def __init__(self, library, hint, details=None, import_error=None):
        msg = "Python library '%s' is required on the managed host but cannot be imported" % library
        if import_error is not None:
            msg = "%s: %s" % (msg, import_error)
        merged = {"missing_library": library}
        merged.update(details or {})
        super().__init__(msg, hint=hint, details=merged)
        self.library = library


class InvalidValueError(RtxDrError, ValueError):
    """A value (module option, LSN, WAL file name...) is malformed or out of range.

    Also a :class:`ValueError`, so pure helpers can be used outside modules
    with ordinary ``except ValueError``.
    """


class ConnectionFailedError(RtxDrError):
    """A server (PostgreSQL, S3...) could not be reached or refused the login.

    ``server_down`` is True when the server is not there or not (yet) taking
    connections, False when it answered but refused us (credentials, pg_hba,
    unknown database...). Callers that tolerate down nodes only tolerate the former.
    """

    def __init__(self, msg, hint=None, details=None, server_down=False):
        super().__init__(msg, hint=hint, details=details)
        self.server_down = server_down


class QueryFailedError(RtxDrError):
    """A statement sent to a reachable server failed."""


def fail_from_exception(module, exc):
    """Report ``exc`` through ``module.fail_json()``; never returns.

    :class:`RtxDrError` becomes ``fail_json(msg=..., hint=..., **details)``.
    Any other exception is a bug or an unforeseen condition: it is reported
    with its type, its text and the traceback (shown with ``-vvv``).
    """
    if isinstance(exc, RtxDrError):
        module.fail_json(**exc.to_result())
        return  # only reached when fail_json is mocked in tests
    module.fail_json(
        msg="Unexpected error in module %s: %s: %s"
        % (getattr(module, "_name", "?"), type(exc).__name__, exc),
        hint="This is probably a bug in the rtx.dr collection; rerun with -vvv and report the traceback.",
        exception="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


def run_module(module, func):
    """Run ``func(module)`` and report its outcome; never returns.

    ``func`` returns the result dict (it should contain ``changed``; it defaults
    to ``False``) or raises. :class:`RtxDrError` and any other ``Exception`` are
    reported with :func:`fail_from_exception`. ``SystemExit`` raised by a
    ``module.exit_json()``/``fail_json()`` inside ``func`` passes through.
    """
    try:
        result = func(module)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        fail_from_exception(module, exc)
        return  # only reached when fail_json is mocked in tests
    result = dict(result or {})
    result.setdefault("changed", False)
    module.exit_json(**result)


def handle_errors(func):
    """Decorator form of :func:`run_module`: ``@handle_errors def gather(module): ...``.

    Calling the decorated function with a module runs it and exits the module.
    """

    def wrapper(module):
        run_module(module, func)

    wrapper.__name__ = getattr(func, "__name__", "wrapper")
    wrapper.__doc__ = func.__doc__
    wrapper.__wrapped__ = func
    return wrapper
