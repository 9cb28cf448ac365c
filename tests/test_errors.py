"""Every `FcsError` pickles intact, so one raised in a worker process reaches the parent as itself."""

from __future__ import annotations

import pickle

import pytest

from fcs_data import errors
from fcs_data.schemas import ValidationReport

EXAMPLES = [
    errors.UnsafePickleError("/d/000001/property_params.pkl", "global posix.system"),
    errors.UnreadableFileError("/d/000002/obses.pth", "EOFError: truncated"),
    errors.SourceError("/d: not a directory"),
    errors.StoreError("/s.zarr: no zarr.json"),
    errors.StoreDataError("/s.zarr", "data/rgb/c/1/0/0/0", "data/rgb", (128, 256), "shard file is missing",
                          "episode 3 (frames 20..99)"),
    errors.NonFiniteDataError("/s.zarr: episode 4 step 9: nan in action.joint_target"),
    errors.LockedError("/s.zarr: another process (pid 12) is converting into it"),
    errors.ConversionIOError("/s.zarr: No space left on device"),
    errors.ResumeMismatch("/s.zarr.partial was started from a different source"),
    errors.VerificationFailed("/s.zarr: 3 values differ"),
    errors.WorkerDied("a worker process died", cause="A child process terminated abruptly"),
    errors.DetectionError("/d: no built-in layout matches (franka_cube_stack_v1: needs states.pth at the root)",
                          "/d", {"franka_cube_stack_v1": "needs states.pth at the root"}),
    errors.DatasetError("/d/000001/007.h5", "eef_states", "has shape (1, 1, 1, 14)", "(1, 1, 14)"),
    errors.WrongInputError("/s.zarr", "store", "a logger dataset", "/s.zarr: this is an fcs store, not a logger dataset"),
    errors.WorldError("layout franka_cube_stack_v1: the world renders one camera, unfused"),
    errors.ConversionRefused("/d: validation found 2 errors", ValidationReport(path="/d", kind="source", layout="v1")),
]


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


@pytest.mark.parametrize("err", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_with_message_and_attributes(err: errors.FcsError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err) and vars(back) == vars(err)


def test_the_examples_cover_every_error_class_of_the_data_library() -> None:
    covered = {type(e) for e in EXAMPLES}
    missing = {c.__name__ for c in _all_subclasses(errors.FcsError) - covered if c.__module__.startswith("fcs_data")}
    assert not missing, f"add an example of {sorted(missing)}"


def test_store_data_error_names_file_array_rows_and_episode() -> None:
    err = EXAMPLES[4]
    assert str(err) == ("/s.zarr: data/rgb/c/1/0/0/0: shard file is missing "
                        "(data/rgb rows 128..255; episode 3 (frames 20..99))")


def test_every_error_a_user_can_receive_is_importable_from_the_errors_modules() -> None:
    import importlib
    import pkgutil

    import fcs_data
    import fcs_train
    import fcs_train.errors

    for package in (fcs_data, fcs_train):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(info.name)
    from fcs_train.planning.client import PlannerError, WireError

    raised = {c for c in _all_subclasses(errors.FcsError) if c.__module__.startswith(("fcs_data", "fcs_train"))}
    assert len(raised) > 20
    for cls in {*raised, PlannerError, WireError}:
        home = errors if cls.__module__.startswith("fcs_data") else fcs_train.errors
        assert getattr(home, cls.__name__, None) is cls, f"{cls.__module__}.{cls.__name__} is not in {home.__name__}"
