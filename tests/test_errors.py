"""One error module: every exception the package defines lives in iec104.errors, is exported
from iec104, and derives from IEC104Error; argument errors are ValueErrors too."""
import importlib
import inspect
import pkgutil

import pytest

import iec104
from iec104 import errors


def _package_modules():
    names = ["iec104"] + [m.name for m in pkgutil.walk_packages(iec104.__path__, "iec104.")]
    return [importlib.import_module(n) for n in names]


def _exceptions_defined_in_the_package():
    found = {}
    for module in _package_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("iec104"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_of_the_package_is_defined_in_errors_and_exported():
    found = _exceptions_defined_in_the_package()
    assert {cls.__name__ for cls in found.values()} >= set(errors.__all__)  # the walk saw them
    elsewhere = sorted(k for k, cls in found.items() if cls.__module__ != "iec104.errors")
    assert elsewhere == []
    for cls in found.values():
        assert issubclass(cls, errors.IEC104Error), cls
        assert cls.__name__ in errors.__all__, cls
        assert cls.__name__ in iec104.__all__, cls
        assert getattr(iec104, cls.__name__) is cls


def test_errors_all_names_only_exceptions_of_the_module():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.IEC104Error) and cls.__module__ == "iec104.errors", name


@pytest.mark.parametrize("name", [
    "SettingsError", "ConnectionLostError", "UnknownTypeError", "UnknownCauseError",
    "CaptureError", "ImportHookError", "InvalidRequestError", "CommandInDoubt",
    "PointListError", "CommandNotAllowed", "CommandOutOfLimits",
])
def test_the_errors_users_meet_import_from_the_package(name):
    assert name in iec104.__all__
    assert getattr(iec104, name) is getattr(errors, name)


@pytest.mark.parametrize("module, name", [
    ("iec104.metadata", "PointListError"), ("iec104.metadata", "CommandNotAllowed"),
    ("iec104.metadata", "CommandOutOfLimits"), ("iec104.capture", "CaptureError"),
    ("iec104.importhooks", "ImportHookError"), ("iec104.session", "SessionSettings"),
])
def test_the_old_import_paths_still_work(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(iec104, name)


@pytest.mark.parametrize("name", [
    "SettingsError", "InvalidRequestError", "PointListError", "CaptureError",
    "CommandNotAllowed", "CommandOutOfLimits",
])
def test_argument_errors_are_value_errors_of_the_hierarchy(name):
    cls = getattr(iec104, name)
    assert issubclass(cls, iec104.IEC104Error) and issubclass(cls, ValueError)


def test_a_point_list_error_names_file_row_and_column():
    e = iec104.PointListError("not a number", path="points.csv", row=3, column="ioa")
    assert str(e) == "points.csv, row 3, column 'ioa': not a number"
    assert (e.path, e.row, e.column) == ("points.csv", 3, "ioa")


def test_a_refusal_by_cause_is_its_typed_command_error():
    for cot, cls in errors.BY_COT.items():
        assert issubclass(cls, iec104.CommandError)
    assert errors.BY_COT[44] is iec104.UnknownTypeError
    assert errors.BY_COT[45] is iec104.UnknownCauseError


def _instances():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if issubclass(cls, errors.CommandError):
            yield cls(f"{name} refused", type_id=45, ca=1, ioa=100, cot=47)
        elif cls is errors.PointListError:
            yield cls("no such column", path="points.csv", row=3, column="ioa")
        else:
            yield cls(f"{name} happened")


@pytest.mark.parametrize("error", list(_instances()), ids=lambda e: type(e).__name__)
def test_every_error_survives_pickling_with_its_attributes(error):
    """Errors cross processes (Ray workers, multiprocessing): the same type, text, fields."""
    import pickle
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert vars(back) == vars(error)
