"""PostgreSQL text values -> Debezium JSON values, without a server.

The inputs are what PostgreSQL's type output functions print under the session settings in
``values.SESSION_OPTIONS`` (DateStyle=ISO,YMD, TimeZone=UTC, IntervalStyle=iso_8601,
extra_float_digits=3, bytea_output=hex), as documented in the PostgreSQL 15 manual
(chapter 8, "Data Types": 8.4 bytea hex format, 8.5.2 date/time output, 8.5.5 interval
output, 8.15.6 array value input/output).
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshet.ingest.sources.postgres import values as v
from freshet.ingest.sources.postgres.values import converter, parse_array

US = 1_000_000
DAY_US = 86_400 * US
MONTH_US = 2_629_800 * US  # 365.25 / 12 days of 86,400 s: exactly 2,629,800 s


def conv(oid: int, text: str, typmod: int = -1):
    return converter(oid, typmod)(text)


# --- scalars -------------------------------------------------------------------------------


def test_bool_is_t_or_f():
    assert conv(v.BOOL, "t") is True
    assert conv(v.BOOL, "f") is False


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (v.INT2, "-32768", -32768),
        (v.INT2, "32767", 32767),
        (v.INT4, "-2147483648", -2147483648),
        (v.INT8, "9223372036854775807", 9223372036854775807),
        (v.INT8, "-9223372036854775808", -9223372036854775808),
        (v.OID, "4294967295", 4294967295),
    ],
)
def test_integers_are_exact_ints(oid, text, expected):
    out = conv(oid, text)
    assert type(out) is int
    assert out == expected


@pytest.mark.parametrize("oid", [v.FLOAT4, v.FLOAT8])
def test_floats_are_numbers(oid):
    assert conv(oid, "1.5") == 1.5
    assert conv(oid, "-0") == 0.0
    assert math.copysign(1.0, conv(oid, "-0")) == -1.0
    assert conv(oid, "1e+30") == 1e30
    assert conv(oid, "3.141592653589793") == math.pi


@pytest.mark.parametrize("oid", [v.FLOAT4, v.FLOAT8])
@pytest.mark.parametrize("special", ["NaN", "Infinity", "-Infinity"])
def test_float_specials_stay_strings(oid, special):
    # JSON has no NaN/Infinity: Debezium writes them as these exact strings.
    assert conv(oid, special) == special


@pytest.mark.parametrize(
    "text",
    ["12345.678", "0.10", "-1.500", "NaN", "123456789012345678901234567890.000000000000001"],
)
def test_numeric_is_the_exact_decimal_string(text):
    assert conv(v.NUMERIC, text, typmod=-1) == text
    assert conv(v.NUMERIC, text, typmod=(12 << 16 | 3) + 4) == text


@pytest.mark.parametrize(
    ("text", "raw"),
    [("\\x00ff10", b"\x00\xff\x10"), ("\\x", b""), ("\\xDEADbeef", b"\xde\xad\xbe\xef")],
)
def test_bytea_hex_becomes_base64(text, raw):
    out = conv(v.BYTEA, text)
    assert out == base64.b64encode(raw).decode()
    assert base64.b64decode(out) == raw


def test_bytea_known_value():
    assert conv(v.BYTEA, "\\x00ff10") == "AP8Q"


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("1970-01-01", 0),
        ("1970-01-02", 1),
        ("2024-02-29", 19782),
        ("1969-12-31", -1),
        ("1900-01-01", -25567),
        ("0001-01-01", -719162),
    ],
)
def test_date_is_days_since_epoch(text, days):
    assert conv(v.DATE, text) == days
    assert date(1970, 1, 1) + timedelta(days=days) == date.fromisoformat(text)


@pytest.mark.parametrize("text", ["infinity", "-infinity", "0044-03-15 BC"])
def test_date_outside_python_range_stays_text(text):
    assert conv(v.DATE, text) == text


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("00:00:00", 0),
        ("13:14:15", (13 * 3600 + 14 * 60 + 15) * US),
        ("13:14:15.123456", (13 * 3600 + 14 * 60 + 15) * US + 123456),
        ("04:05:06.5", (4 * 3600 + 5 * 60 + 6) * US + 500000),
        ("23:59:59.999999", DAY_US - 1),
        ("24:00:00", DAY_US),  # PostgreSQL allows time '24:00:00'
    ],
)
def test_time_is_micros_since_midnight(text, micros):
    assert conv(v.TIME, text) == micros


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:00:00+00", "10:00:00Z"),
        ("10:00:00+02", "08:00:00Z"),
        ("10:00:00-08", "18:00:00Z"),
        ("10:00:00+05:30", "04:30:00Z"),
        ("10:00:00-03:30", "13:30:00Z"),
        ("01:15:00+02", "23:15:00Z"),  # wraps back past midnight
        ("20:00:00-05", "01:00:00Z"),  # wraps forward past midnight
        ("04:05:06.789+05:30", "22:35:06.789Z"),
        ("04:05:06.000001-01", "05:05:06.000001Z"),
        ("12:00:00+05:53:28", "06:06:32Z"),  # a local-mean-time offset with seconds
    ],
)
def test_timetz_is_utc_iso_time(text, expected):
    assert conv(v.TIMETZ, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01 00:00:00", 0),
        ("2024-01-02 03:04:05.123456", 1704164645123456),
        ("2024-01-02 03:04:05.5", 1704164645500000),
        ("1969-12-31 23:59:59.5", -500000),
        ("1900-01-01 00:00:00", -2208988800 * US),
    ],
)
def test_timestamp_is_micros_since_epoch(text, expected):
    assert conv(v.TIMESTAMP, text, typmod=-1) == expected
    assert conv(v.TIMESTAMP, text, typmod=6) == expected
    assert conv(v.TIMESTAMP, text, typmod=4) == expected


def test_timestamp_matches_python_arithmetic():
    text = "2038-01-19 03:14:07.654321"
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    expected = int(dt.timestamp()) * US + dt.microsecond
    assert conv(v.TIMESTAMP, text) == expected


@pytest.mark.parametrize("typmod", [0, 1, 2, 3])
def test_timestamp_precision_up_to_3_is_millis(typmod):
    assert conv(v.TIMESTAMP, "2024-01-02 03:04:05.123", typmod) == 1704164645123
    assert conv(v.TIMESTAMP, "2024-01-02 03:04:05", typmod) == 1704164645000
    assert conv(v.TIMESTAMP, "1969-12-31 23:59:59.999", typmod) == -1


@pytest.mark.parametrize("text", ["infinity", "-infinity", "0044-03-15 12:00:00 BC"])
@pytest.mark.parametrize("typmod", [-1, 3])
def test_timestamp_outside_python_range_stays_text(text, typmod):
    assert conv(v.TIMESTAMP, text, typmod) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02 03:04:05.5+00", "2024-01-02T03:04:05.5Z"),
        ("2024-01-02 03:04:05+00", "2024-01-02T03:04:05Z"),
        ("2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456Z"),
        ("2024-01-02 03:04:05.120000+00", "2024-01-02T03:04:05.12Z"),
        ("2024-01-02 03:04:05.000100+00", "2024-01-02T03:04:05.0001Z"),
        ("1969-07-20 20:17:40+00", "1969-07-20T20:17:40Z"),
        ("0099-01-01 00:00:00+00", "0099-01-01T00:00:00Z"),
        # Defensive: an offset other than UTC (the session pins TimeZone=UTC) is converted.
        ("2024-01-02 03:04:05+02:00", "2024-01-02T01:04:05Z"),
    ],
)
def test_timestamptz_is_iso_utc(text, expected):
    assert conv(v.TIMESTAMPTZ, text) == expected


@pytest.mark.parametrize(
    "text", ["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "12345-01-01 00:00:00+00"]
)
def test_timestamptz_outside_python_range_stays_text(text):
    assert conv(v.TIMESTAMPTZ, text) == text


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.booleans(),
)
def test_timestamptz_text_rewrite_equals_the_datetime_round_trip(moment, trim):
    # PostgreSQL's output under TimeZone=UTC: trailing zeros of the fraction trimmed (``trim``),
    # and no fraction at all when it is zero.
    text = moment.isoformat(sep=" ")
    if trim and "." in text:
        text = text.rstrip("0").rstrip(".")
    text += "+00"
    assert v._timestamptz(text) == v._iso_utc(v._parse_timestamp(text))


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("PT0S", 0),
        ("P1Y2M3DT4H5M6.5S", 14 * MONTH_US + 3 * DAY_US + (4 * 3600 + 5 * 60 + 6) * US + 500000),
        ("P1M", MONTH_US),
        ("P1Y", 12 * MONTH_US),
        ("P3D", 3 * DAY_US),
        ("PT1H", 3600 * US),
        ("PT0.000001S", 1),
        ("PT-0.5S", -500000),
        ("PT-6.25S", -6250000),
        (
            "P-1Y-2M3DT-4H-5M-6.25S",
            -14 * MONTH_US + 3 * DAY_US - (4 * 3600 + 5 * 60) * US - 6250000,
        ),
        ("P-3D", -3 * DAY_US),
        ("PT100H", 100 * 3600 * US),
        ("P1000Y-1M", 11999 * MONTH_US),
    ],
)
def test_interval_iso8601_is_micros(text, micros):
    assert conv(v.INTERVAL, text) == micros


def test_interval_month_is_30_4375_days():
    assert conv(v.INTERVAL, "P1M") == round(30.4375 * DAY_US)
    assert conv(v.INTERVAL, "P1Y") == round(365.25 * DAY_US)


def test_interval_in_another_style_stays_text():
    assert conv(v.INTERVAL, "1 year 2 mons") == "1 year 2 mons"


@pytest.mark.parametrize(
    ("oid", "text"),
    [
        (v.UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (v.JSON, '{"a": [1, 2]}'),
        (v.JSONB, '{"b": {"c": null}}'),
        (v.TEXT, "hello 'world'"),
        (v.VARCHAR, "varchar"),
        (v.BPCHAR, "ab "),
        (v.MONEY, "$1,000.00"),
        (v.XML, "<a/>"),
        (16384, "happy"),  # an enum or other user-defined type
        (999_999, "{not,an,array}"),
    ],
)
def test_other_types_are_unchanged_text(oid, text):
    assert conv(oid, text) == text


# --- arrays --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{1,2,3}", ["1", "2", "3"]),
        ("{1,NULL,3}", ["1", None, "3"]),
        ('{"NULL",NULL}', ["NULL", None]),  # a quoted NULL is the string
        ('{"a b","c\\"d",NULL}', ["a b", 'c"d', None]),
        ('{"back\\\\slash","",x}', ["back\\slash", "", "x"]),
        ('{"{brace}","a,b"}', ["{brace}", "a,b"]),
        ("{a;b,c}", ["a;b", "c"]),  # ';' needs no quotes in a ','-delimited array
        ("{{1,2},{3,4}}", [["1", "2"], ["3", "4"]]),
        ('{{"a",NULL},{"}",c}}', [["a", None], ["}", "c"]]),
        ("{{{1}},{{2}}}", [[["1"]], [["2"]]]),
        ("[0:1]={7,8}", ["7", "8"]),
        ("[1:2][1:1]={{1},{2}}", [["1"], ["2"]]),
        ("{héllo,日本}", ["héllo", "日本"]),
    ],
)
def test_parse_array(text, expected):
    assert parse_array(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1,2", "{", "{1,2", '{"a', '{"a"x}', "{{1}x}", "{1}}", "{1},", "[0:1]{1}", '{"a\\'],
)
def test_parse_array_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_array(text)


def test_int_array():
    assert conv(1007, "{1,NULL,-3}") == [1, None, -3]
    assert conv(1016, "{{9223372036854775807},{0}}") == [[9223372036854775807], [0]]
    assert conv(1005, "{}") == []


def test_numeric_array_keeps_exact_strings():
    assert conv(1231, "{1.50,2,NaN,NULL}") == ["1.50", "2", "NaN", None]


def test_bool_array():
    assert conv(1000, "{t,f,NULL}") == [True, False, None]


def test_float_array():
    assert conv(1022, "{1.5,NaN,-Infinity}") == [1.5, "NaN", "-Infinity"]


def test_timestamp_array_uses_the_column_precision():
    text = '{"2024-01-02 03:04:05.123","1970-01-01 00:00:00",NULL}'
    assert conv(1115, text, typmod=-1) == [1704164645123000, 0, None]
    assert conv(1115, text, typmod=3) == [1704164645123, 0, None]


def test_timestamptz_and_date_arrays():
    assert conv(1185, '{"2024-01-02 03:04:05.5+00",infinity}') == [
        "2024-01-02T03:04:05.5Z",
        "infinity",
    ]
    assert conv(1182, "{1970-01-02,1969-12-31}") == [1, -1]


def test_bytea_array_unescapes_before_decoding():
    # array_out quotes and backslash-escapes bytea's leading backslash.
    assert conv(1001, '{"\\\\x00ff10",NULL}') == ["AP8Q", None]


def test_text_array_and_uuid_array_stay_strings():
    assert conv(1009, '{"a b","c\\"d",NULL}') == ["a b", 'c"d', None]
    assert conv(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}") == [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    ]


def test_interval_array():
    assert conv(1187, "{P1D,PT0S,NULL}") == [DAY_US, 0, None]


def test_unknown_array_type_is_text():
    # Arrays of types without a mapping (e.g. an enum array) stay PostgreSQL's text.
    assert conv(16385, "{happy,sad}") == "{happy,sad}"
