"""Generated hot-path code: its source reaches tracebacks and inspect; wrong values are typed errors."""

from __future__ import annotations

import inspect
import linecache
import traceback

import pytest

from stktagg import codegen, datatypes
from stktagg.errors import LocalProtocolError
from stktagg.schema import KeyType, compile_codec
from stktagg.table import Layout
from stktagg.wire import compile_body_encoder, compile_run_decoder

IP_RATES = (KeyType.IP, 4, (1 << 9) | (1 << 10), ((10, 10_000),))


def generated_functions():
    layout = Layout(compile_codec(*IP_RATES).fields)
    return {
        "run decoder": compile_run_decoder(*IP_RATES),
        "body encoder": compile_body_encoder(*IP_RATES),
        "combine": layout.fast_combine,
        "pack": layout.fast_pack,
        "freq_from_wire": datatypes.freq_from_wire,
        "rotate": datatypes.rotate,
    }


@pytest.mark.parametrize("what", list(generated_functions()))
def test_inspect_reads_the_source_of_generated_code(what):
    function = generated_functions()[what]
    source = inspect.getsource(function)
    assert source.lstrip().startswith("def ") and source == function.__source__.lstrip("\n")
    assert function.__code__.co_filename.startswith("<stktagg generated ")


def test_a_traceback_through_generated_code_shows_its_lines():
    pack = generated_functions()["pack"]
    with pytest.raises(ValueError) as info:
        pack((1, 2, 3), None, 0, 0)  # three values for a layout of two: the unpacking line fails
    text = "".join(traceback.format_exception(info.value))
    assert "<stktagg generated " in text and "pack, fields http_req_cnt,http_req_rate" in text
    assert ") = values" in text  # the generated line itself, not just a file name


def test_the_generated_pack_keeps_a_rate_exactly_as_freq_from_wire_does():
    layout = Layout(compile_codec(*IP_RATES).fields)
    now, period = 50_000, 10_000
    for age, curr, prev in [(0, 1, 0), (9_999, 3, 4), (19_999, 1, 1), (20_000, 5, 5), (60_000, 5, 5),
                            (4_233_758_769, 0, 0), (100, 0, 0), (0, 0, 7)]:
        arr = [0] * layout.record
        layout.fast_pack((7, (age, curr, prev)), arr, 0, now)
        kept = datatypes.freq_from_wire(age, curr, prev, now, period)
        assert tuple(arr[layout.record - 3:]) == (kept or (0, 0, 0)), (age, curr, prev)


@pytest.mark.parametrize(
    "values, named",
    [((None, (0, 1, 0)), "http_req_cnt"), ((1, (0, "x", 0)), "http_req_rate"), ((1, (0, 1)), "http_req_rate"),
     ((-1, (0, 1, 0)), "http_req_cnt"), ((1 << 64, (0, 1, 0)), "http_req_cnt")],
)
def test_a_wrong_value_to_the_generated_encoder_is_a_typed_error_naming_the_field(values, named):
    encode = compile_body_encoder(*IP_RATES)
    with pytest.raises(LocalProtocolError, match=named):
        encode(b"\x7f\x00\x00\x01", values)


def test_a_wrong_key_to_the_generated_encoder_is_a_typed_error():
    encode = compile_body_encoder(*IP_RATES)
    with pytest.raises(LocalProtocolError):
        encode(b"\x7f\x00\x00", (1, (0, 1, 0)))
    with pytest.raises(LocalProtocolError):
        encode("127.0.0.1", (1, (0, 1, 0)))


def test_the_source_registry_is_bounded(monkeypatch):
    monkeypatch.setattr(codegen, "MAX_REGISTERED", 3)
    names = [codegen.compile_function(f"def f():\n    return {i}\n", "f", {}, f"test {i}") for i in range(5)]
    files = [f.__code__.co_filename for f in names]
    assert [name in linecache.cache for name in files] == [False, False, True, True, True]
    assert [f() for f in names] == [0, 1, 2, 3, 4]  # evicted ones still run
