"""Loading libstrata and declaring its C API for ctypes (mirrors bindings/c/include/strata.h)."""

import ctypes
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

LIBRARY_NAME = "libstrata.dylib" if sys.platform == "darwin" else "libstrata.so"


def candidates():
    """Where the library is looked for, in order (see README "Using it from Python")."""
    env = os.environ.get("STRATA_LIBRARY")
    if env:
        yield Path(env)
        return
    yield Path(__file__).with_name(LIBRARY_NAME)
    roots = []
    if os.environ.get("CARGO_TARGET_DIR"):
        roots.append(Path(os.environ["CARGO_TARGET_DIR"]))
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for directory in (start, *start.parents):
            if (directory / "Cargo.toml").is_file() and (directory / "bindings").is_dir():
                roots.append(directory / "target")
                break
    for root in roots:
        for profile in ("release", "debug"):
            yield root / profile / LIBRARY_NAME


def load():
    tried = []
    for path in candidates():
        tried.append(str(path))
        if path.is_file():
            return ctypes.CDLL(str(path)), path
    raise ImportError(
        "libstrata not found (build it with `cargo build --release -p strata-ffi`, or set "
        "STRATA_LIBRARY to its path); tried: " + ", ".join(tried)
    )


class Options(Structure):
    _fields_ = [
        ("durability", c_uint32),
        ("bucket_width", c_uint32),
        ("cache_bytes", c_uint64),
        ("max_payload_bytes", c_uint64),
        ("max_events_per_append", c_uint32),
        ("read_connections", c_uint32),
        ("busy_timeout_ms", c_uint32),
    ]


class NewEvent(Structure):
    _fields_ = [
        ("event_type", c_char_p),
        ("data", c_char_p),
        ("data_len", c_size_t),
        ("metadata", c_char_p),
        ("metadata_len", c_size_t),
        ("event_id", c_char_p),
    ]


class StreamAppend(Structure):
    _fields_ = [
        ("stream_id", c_char_p),
        ("expected_kind", c_uint32),
        ("expected_version", c_uint64),
        ("events", POINTER(NewEvent)),
        ("n_events", c_size_t),
    ]


class AppendResult(Structure):
    _fields_ = [
        ("first_position", c_uint64),
        ("last_position", c_uint64),
        ("last_version", c_uint64),
        ("already_stored", c_uint32),
    ]


class Event(Structure):
    _fields_ = [
        ("position", c_uint64),
        ("version", c_uint64),
        ("recorded_at", c_int64),
        ("stream_id", c_void_p),
        ("stream_id_len", c_size_t),
        ("event_type", c_void_p),
        ("event_type_len", c_size_t),
        ("data", c_void_p),
        ("data_len", c_size_t),
        ("metadata", c_void_p),
        ("metadata_len", c_size_t),
        ("event_id", c_uint8 * 16),
    ]


class StreamInfo(Structure):
    _fields_ = [
        ("version", c_uint64),
        ("first_position", c_uint64),
        ("last_position", c_uint64),
    ]


class ProjectionStatus(Structure):
    _fields_ = [
        ("name", c_char * 72),
        ("version", c_uint32),
        ("phase", c_uint32),
        ("checkpoint", c_uint64),
        ("lag", c_uint64),
        ("fault_position", c_uint64),
    ]


lib, path = load()

_P = c_void_p
_SIGNATURES = {
    "strata_errmsg": (c_char_p, []),
    "strata_last_actual_version": (c_uint64, []),
    "strata_status_name": (c_char_p, [c_int]),
    "strata_version": (c_char_p, []),
    "strata_free": (None, [_P]),
    "strata_options_init": (c_int, [POINTER(Options)]),
    "strata_open": (c_int, [c_char_p, POINTER(Options), POINTER(_P)]),
    "strata_open_in_memory": (c_int, [POINTER(Options), POINTER(_P)]),
    "strata_close": (c_int, [_P]),
    "strata_store_free": (c_int, [_P]),
    "strata_append": (
        c_int,
        [_P, c_char_p, c_uint32, c_uint64, POINTER(NewEvent), c_size_t, POINTER(AppendResult)],
    ),
    "strata_append_multi": (c_int, [_P, POINTER(StreamAppend), c_size_t, POINTER(AppendResult)]),
    "strata_read_stream": (c_int, [_P, c_char_p, c_uint64, c_uint32, c_uint64, POINTER(_P)]),
    "strata_read_all": (c_int, [_P, c_uint64, c_uint64, POINTER(_P)]),
    "strata_read_by_type": (
        c_int,
        [_P, POINTER(c_char_p), c_size_t, c_int64, c_int64, c_uint64, c_uint64, POINTER(_P)],
    ),
    "strata_cursor_next": (c_int, [_P, POINTER(Event)]),
    "strata_cursor_free": (c_int, [_P]),
    "strata_get_stream_info": (c_int, [_P, c_char_p, POINTER(StreamInfo)]),
    "strata_last_position": (c_int, [_P, POINTER(c_uint64)]),
    "strata_subscribe": (
        c_int,
        [_P, c_uint64, c_char_p, c_char_p, POINTER(c_char_p), c_size_t, POINTER(_P)],
    ),
    "strata_subscription_next": (c_int, [_P, c_uint32, POINTER(Event)]),
    "strata_subscription_free": (c_int, [_P]),
    "strata_projection_register_wasm": (
        c_int,
        [_P, c_char_p, c_size_t, POINTER(ProjectionStatus)],
    ),
    "strata_projection_status_get": (c_int, [_P, c_char_p, POINTER(ProjectionStatus)]),
    "strata_projection_catch_up": (c_int, [_P, c_char_p, POINTER(ProjectionStatus)]),
    "strata_projection_reset": (c_int, [_P, c_char_p, POINTER(ProjectionStatus)]),
    "strata_projection_resume": (c_int, [_P, c_char_p, POINTER(ProjectionStatus)]),
    "strata_projection_query": (
        c_int,
        [_P, c_char_p, c_char_p, c_size_t, POINTER(POINTER(c_uint8)), POINTER(c_size_t)],
    ),
    "strata_projections_start": (c_int, [_P, c_uint32]),
    "strata_projections_stop": (c_int, [_P]),
    "strata_metrics_text": (c_int, [_P, POINTER(c_void_p)]),
}

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes
