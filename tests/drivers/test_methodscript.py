"""The MethodSCRIPT codec and the EmStat4 line parsers: pure functions, examples and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import InstrumentProtocolError
from drivers.emstat import (
    DeviceError,
    parse_eis_point,
    parse_line,
    parse_sample,
    parse_serial_number,
    parse_version,
    script_bytes,
)
from drivers.methodscript import (
    MAX_MANTISSA,
    STATUS_OVERLOAD,
    VAR_TYPES,
    decode_value,
    encode_value,
    error_code,
    format_package,
    format_si,
    parse_package,
    parse_package_variables,
    parse_si,
)

# The finest prefix that fits leaves at least MAX_MANTISSA / 1000 counts (the next finer prefix
# overflowed), so rounding to an integer costs at most half a count of that.
RELATIVE_ERROR = 0.5 / (MAX_MANTISSA / 1000)
FINEST_STEP = 1e-18  # the 'a' prefix: below it only absolute resolution remains

values = st.floats(min_value=-1e20, max_value=1e20, allow_nan=False, allow_infinity=False)
var_types = st.sampled_from(sorted(VAR_TYPES))


def close_enough(decoded: float, value: float) -> bool:
    return abs(decoded - value) <= max(abs(value) * RELATIVE_ERROR, FINEST_STEP / 2) * (1 + 1e-9)


# ---- the vendor's worked example ---------------------------------------------------------------
def test_vendor_example_package() -> None:
    package = parse_package("Pda7F85F3Fu;ba48D503Dp,10,288")
    assert package["da"] == pytest.approx(-0.499905, abs=1e-12)
    assert package["ba"] == pytest.approx(-57.85e-6, rel=1e-4)


def test_vendor_example_metadata() -> None:
    da, ba = parse_package_variables("Pda7F85F3Fu;ba48D503Dp,10,288")
    assert (da.status, da.range_index) == (0, None)
    assert (ba.status, ba.range_index) == (0, 0x88)


def test_decode_is_hex_minus_2_27_times_the_prefix() -> None:
    assert decode_value("8000000", "m") == 0.0
    assert decode_value("8000001", "m") == pytest.approx(1e-3)
    assert decode_value("0000000", " ") == -(2**27)
    assert decode_value("800000A", "i") == 10


@pytest.mark.parametrize("bad", [("0x12345", "u"), (" 12_345", "u"), ("-123456", "u"),
                                 ("1234567", "x"), ("123456", "u"), ("12345678", "u")])
def test_decode_refuses_what_is_not_seven_hex_digits_and_a_prefix(bad: tuple[str, str]) -> None:
    with pytest.raises(InstrumentProtocolError):
        decode_value(*bad)


def test_error_codes_are_found_anywhere_in_a_line() -> None:
    assert error_code("Z!0006") == 6
    assert error_code("!000A") == 10
    assert error_code("e") is None


def test_format_si_writes_integers_with_a_prefix() -> None:
    assert format_si(1.13e-3) == "1130u"
    assert format_si(-0.5) == "-500m"
    assert format_si(3600) == "3600"
    assert format_si(0) == "0"
    assert parse_si("1130u") == pytest.approx(1.13e-3)


# ---- properties --------------------------------------------------------------------------------
@settings(deadline=None)
@given(values)
def test_encode_decode_round_trip_within_the_mantissa(value: float) -> None:
    text = encode_value(value)
    assert len(text) == 8
    assert close_enough(decode_value(text[:7], text[7]), value)


@settings(deadline=None)
@given(st.lists(st.tuples(var_types, values), min_size=1, max_size=6),
       st.integers(min_value=0, max_value=15))
def test_format_then_parse_package_round_trip(items: list[tuple[str, float]], status: int) -> None:
    line = format_package(items, status)
    parsed = parse_package_variables(line)
    assert [v.type for v in parsed] == [t for t, _ in items]
    for (_, value), var in zip(items, parsed):
        assert close_enough(var.value, value)
        assert var.status == status


@settings(deadline=None)
@given(st.integers(min_value=-10**9, max_value=10**9), st.sampled_from([0, 3, 6, 9, 12]))
def test_si_numbers_round_trip_exactly(mantissa: int, exponent: int) -> None:
    value = mantissa * 10.0**-exponent
    assert parse_si(format_si(value)) == pytest.approx(value, rel=1e-9, abs=1e-15)


@settings(deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_format_si_keeps_nine_digits_or_the_picoscale(value: float) -> None:
    back = parse_si(format_si(value))
    assert abs(back - value) <= max(1e-9 * abs(value), 0.5e-12) * (1 + 1e-6)


@settings(deadline=None)
@given(st.floats(min_value=0, max_value=1e4), st.floats(min_value=-3, max_value=3),
       st.floats(min_value=-0.03, max_value=0.03), st.booleans())
def test_fast_sample_parser_agrees_with_the_codec(t: float, e: float, i: float,
                                                  over: bool) -> None:
    line = format_package([("eb", t), ("ab", e), ("ba", i)], STATUS_OVERLOAD if over else 0)
    sample, generic = parse_sample(line), parse_package(line)
    assert (sample.t_s, sample.potential_V, sample.current_A) == (
        generic["eb"], generic["ab"], generic["ba"])
    assert sample.overload is over


def test_sample_parser_takes_other_orders_and_open_circuit_packages() -> None:
    reordered = format_package([("ba", 1e-3), ("eb", 2.0), ("ab", 0.1)])
    assert parse_sample(reordered).current_A == pytest.approx(1e-3)
    ocp = parse_sample(format_package([("eb", 2.0), ("ab", 0.1)]))
    assert (ocp.t_s, ocp.current_A) == (2.0, 0.0)
    with pytest.raises(InstrumentProtocolError, match="eb"):
        parse_sample(format_package([("ab", 0.1), ("ba", 0.0)]))


def test_eis_parser_builds_the_complex_impedance() -> None:
    line = format_package([("eb", 3.0), ("dc", 1e3), ("cc", 12.5), ("cd", -3.25)])
    assert parse_eis_point(line) == (3.0, 1e3, complex(12.5, -3.25))


def test_stream_lines_are_classified_or_refused() -> None:
    assert [parse_line(x).kind for x in ["e", "M0006", "P", "*", "", "Z", "Tsome text"]] == [
        "accepted", "loop_start", "package", "loop_end", "script_end", "abort", "text"]
    with pytest.raises(DeviceError) as info:
        parse_line("!4003")
    assert info.value.code == 0x4003
    with pytest.raises(InstrumentProtocolError):
        parse_line("hello")


def test_reply_parsers() -> None:
    assert parse_version("tes4_lr#b1", "R1.6*") == "es4_lr#b1 R1.6"
    assert parse_serial_number("iES4-1") == "ES4-1"
    assert script_bytes(["cell_off"]) == b"e\ncell_off\n\n"


# ---- fuzz: nothing but InstrumentProtocolError escapes a parser ----------------------------------
near_variables = st.builds(
    lambda vtype, digits, prefix, meta: vtype + digits + prefix + "".join("," + m for m in meta),
    st.text("abcdz", min_size=2, max_size=2), st.text("0123456789ABCDEFx", min_size=6, max_size=8),
    st.sampled_from([*"afpnumkMGTPEi ?", ""]), st.lists(st.text("0129afAFG", max_size=3), max_size=2))
near_packages = st.builds(lambda variables, sep: "P" + sep.join(variables),
                          st.lists(near_variables, max_size=4), st.sampled_from([";", ",", ";;"]))
LINE_PARSERS = [parse_package, parse_package_variables, parse_sample, parse_eis_point, parse_line,
                parse_serial_number]


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), near_packages))
def test_text_parsers_raise_only_protocol_errors(text: str) -> None:
    for parse in LINE_PARSERS:
        try:
            parse(text)
        except InstrumentProtocolError:
            pass
    try:
        parse_version(text, text)
    except InstrumentProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(), near_packages.map(str.encode)))
def test_package_parser_on_bytes_raises_only_protocol_errors(data: bytes) -> None:
    for parse in (parse_package, parse_package_variables):
        try:
            parse(data)
        except InstrumentProtocolError:
            pass


def test_non_finite_values_cannot_be_encoded() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            encode_value(bad)
        with pytest.raises(ValueError):
            format_si(bad)
