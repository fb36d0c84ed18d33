# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.rtx.dr.plugins.module_utils import errors
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError


class Exited(Exception):
    pass


class FakeModule:
    """Records exit_json/fail_json calls and stops like the real ones."""

    _name = "rtx.dr.fake"

    def __init__(self):
        self.calls = []

    def exit_json(self, **kwargs):
        self.calls.append(("exit", kwargs))
        raise Exited()

    def fail_json(self, **kwargs):
        self.calls.append(("fail", kwargs))
        raise Exited()


def test_error_carries_msg_hint_details():
    exc = RtxDrError("login_port 70000 is out of range", hint="Use 1-65535.", details={"login_port": 70000})
    assert exc.msg == "login_port 70000 is out of range"
    assert exc.hint == "Use 1-65535."
    assert exc.details == {"login_port": 70000}
    assert str(exc) == "login_port 70000 is out of range (hint: Use 1-65535.)"
    assert exc.to_result() == {"msg": "login_port 70000 is out of range", "hint": "Use 1-65535.", "login_port": 70000}


def test_error_without_hint_has_no_hint_key():
    exc = RtxDrError("boom")
    assert str(exc) == "boom"
    assert exc.to_result() == {"msg": "boom"}
    assert exc.details == {}


def test_details_never_override_reserved_result_keys():
    exc = RtxDrError("real message", details={"msg": "fake", "changed": True, "failed": False, "rc": 3, "path": "/x"})
    result = exc.to_result()
    assert result["msg"] == "real message"
    assert "changed" not in result and "failed" not in result and "rc" not in result
    assert result["detail_msg"] == "fake"
    assert result["detail_changed"] is True
    assert result["detail_failed"] is False
    assert result["detail_rc"] == 3
    assert result["path"] == "/x"


def test_details_are_copied():
    details = {"a": 1}
    exc = RtxDrError("x", details=details)
    details["a"] = 2
    assert exc.details == {"a": 1}


def test_subclasses():
    assert issubclass(InvalidValueError, ValueError)
    assert issubclass(InvalidValueError, RtxDrError)
    exc = ConnectionFailedError("down", server_down=True)
    assert exc.server_down is True
    assert ConnectionFailedError("refused").server_down is False
    missing = MissingLibraryError("boto3", hint="pip install boto3", import_error=ImportError("No module named 'boto3'"))
    assert "boto3" in missing.msg and "No module named 'boto3'" in missing.msg
    assert missing.details == {"missing_library": "boto3"}
    assert missing.hint == "pip install boto3"


def test_fail_from_exception_reports_rtxdr_error():
    module = FakeModule()
    with pytest.raises(Exited):
        errors.fail_from_exception(module, RtxDrError("bad login_db", hint="create it", details={"login_db": "x"}))
    assert module.calls == [("fail", {"msg": "bad login_db", "hint": "create it", "login_db": "x"})]


def test_fail_from_exception_reports_unexpected_exception_with_traceback():
    module = FakeModule()
    try:
        raise KeyError("oops")
    except KeyError as exc:
        with pytest.raises(Exited):
            errors.fail_from_exception(module, exc)
    kind, result = module.calls[0]
    assert kind == "fail"
    assert result["msg"] == "Unexpected error in module rtx.dr.fake: KeyError: 'oops'"
    assert "bug" in result["hint"]
    assert "Traceback" in result["exception"] and "KeyError" in result["exception"]


def test_run_module_success_defaults_changed_false():
    module = FakeModule()
    with pytest.raises(Exited):
        errors.run_module(module, lambda m: {"answer": 42})
    assert module.calls == [("exit", {"answer": 42, "changed": False})]


def test_run_module_keeps_changed_true():
    module = FakeModule()
    with pytest.raises(Exited):
        errors.run_module(module, lambda m: {"changed": True})
    assert module.calls == [("exit", {"changed": True})]


def test_run_module_passes_module_and_reports_error():
    seen = []

    def func(module):
        seen.append(module)
        raise InvalidValueError("wal_segment_size 3 is invalid", hint="use a power of two", details={"value": 3})

    module = FakeModule()
    with pytest.raises(Exited):
        errors.run_module(module, func)
    assert seen == [module]
    assert module.calls == [("fail", {"msg": "wal_segment_size 3 is invalid", "hint": "use a power of two", "value": 3})]


def test_run_module_lets_system_exit_through():
    def func(module):
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        errors.run_module(FakeModule(), func)


def test_run_module_when_fail_json_does_not_stop():
    # Some test doubles record fail_json without raising: exit_json must then not be called too.
    class Lenient(FakeModule):
        def fail_json(self, **kwargs):
            self.calls.append(("fail", kwargs))

    def func(module):
        raise RtxDrError("x")

    module = Lenient()
    errors.run_module(module, func)
    assert module.calls == [("fail", {"msg": "x"})]


def test_handle_errors_decorator():
    @errors.handle_errors
    def gather(module):
        """Gather things."""
        return {"n": 1}

    module = FakeModule()
    with pytest.raises(Exited):
        gather(module)
    assert module.calls == [("exit", {"n": 1, "changed": False})]
    assert gather.__name__ == "gather"
    assert gather.__doc__ == "Gather things."
