"""KELLER Series 30 / X-Line pressure transmitters on the KELLER bus (RS485, 9600 8N1).

Written from KELLER's public "Communication protocol Series 30" (sections on the data-link layer,
F48 and F73; see shared/instruments.md). A frame is the device address, the function, its data,
then CRC-16/Modbus (poly 0xA001, init 0xFFFF) sent **high byte first** (Modbus proper sends it low
byte first). The manual's example request, F73 channel 1 to the transparent address 250:

>>> list(build_f73(250, 1))
[250, 73, 1, 161, 167]
>>> list(build_f48(250))
[250, 48, 4, 67]

=========  ==============================================  ========================================
function   request                                         reply
=========  ==============================================  ========================================
F48        ``addr 48 crcH crcL``                           ``addr 48 Class Group Year Week BUF STAT
                                                           crcH crcL`` (STAT 0: first call since
                                                           power-on, 1: already initialised)
F73        ``addr 73 CH crcH crcL``                        ``addr 73 B3 B2 B1 B0 STAT crcH crcL``,
                                                           B3..B0 a big-endian IEEE-754 float32
exception  (any)                                           ``addr (function | 0x80) code crcH crcL``
=========  ==============================================  ========================================

F73 channels: 0 CH0 (calculated), 1 P1 bar, 2 P2 bar, 3 T °C (additional sensor), 4 TOB1 °C
(temperature of pressure sensor 1), 5 TOB2 °C. A standard transmitter has only P1 and TOB1.
STAT bit 7 (/STD) = power-up mode, bit 6 = analogue-output error, bits 0-5 = a measuring error on
CH0, P1, P2, T, TOB1, TOB2. Exception codes: 1 function not implemented, 2 incorrect parameter
(CH > 5), 3 erroneous data (wrong message length), 32 the device was powered up anew and must be
initialised with F48 first. A message with a transmission error (bad CRC) gets no reply at all.

Address 250 is "transparent": whichever single device is on the bus answers, with its own
address in the reply (so the driver accepts any 1..250 there).

:class:`KellerGauge` is the PressureGauge role (drivers/base.py)::

    with KellerGauge("/dev/ttyUSB0") as gauge:
        pressure_Pa, temperature_K = gauge.read()

Temperature comes from TOB1 (channel 4) by default: it is the pressure sensor's own temperature,
the one the manual names for temperature compensation, and the only temperature a standard
transmitter has. ``temperature_channel=T`` (3) reads an additional temperature sensor instead.
"""

from __future__ import annotations

import math
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

import serial

from drivers.base import InstrumentGone, InstrumentProtocolError, InstrumentTimeout, RetriedFaults

# --- the wire ---------------------------------------------------------------------------------
TRANSPARENT_ADDRESS = 250  # any single device on the bus answers it
F_INITIALISE = 48
F_READ_FLOAT = 73
EXCEPTION_BIT = 0x80  # set in the function byte of an exception reply

CH0, P1, P2, T, TOB1, TOB2 = range(6)  # F73 channels
CHANNEL_NAMES = ("CH0", "P1", "P2", "T", "TOB1", "TOB2")
CHANNEL_UNITS = ("", "bar", "bar", "degC", "degC", "degC")
TEMPERATURE_CHANNELS = (T, TOB1, TOB2)

STAT_POWER_UP = 0x80  # /STD: the transmitter is in power-up mode, not standard mode
STAT_ANALOG_ERROR = 0x40  # ERR2: the analogue output saturated (not a reading error)
# bits 0..5: a measuring or computation error on channel n is bit (1 << n)

EXC_FUNCTION = 1  # function not implemented
EXC_PARAMETER = 2  # incorrect parameter (e.g. CH > 5)
EXC_DATA = 3  # erroneous data (e.g. wrong message length)
EXC_INITIALISE = 32  # powered up anew: initialise with F48 first
EXCEPTION_MEANINGS = {
    EXC_FUNCTION: "function not implemented",
    EXC_PARAMETER: "incorrect parameter",
    EXC_DATA: "erroneous data (wrong message length?)",
    EXC_INITIALISE: "device powered up anew: it must be initialised with F48 first",
}

F48_REPLY_LEN = 10
F73_REPLY_LEN = 9
EXCEPTION_REPLY_LEN = 5

PA_PER_BAR = 1e5
ZERO_CELSIUS_K = 273.15

_R = TypeVar("_R")


class KellerException(InstrumentProtocolError):
    """The device answered with an exception reply (``function | 0x80``, ``code``)."""

    def __init__(self, function: int, code: int) -> None:
        meaning = EXCEPTION_MEANINGS.get(code, "unknown exception code")
        super().__init__(f"KELLER F{function}: exception {code}: {meaning}")
        self.function = function
        self.code = code


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What F48 returns: ``DeviceInfo(5, 20, 10, 20, 10, 1).firmware == '10.20'``.

    ``device_class`` 5 is a Series 30 transmitter; ``group`` 1 (1999 on) or 20 (2002 on, X-Line
    5.20-5.24); ``status`` 0 on the first F48 after power-on, 1 when already initialised.
    """

    device_class: int
    group: int
    year: int
    week: int
    buffer_size: int
    status: int

    @property
    def firmware(self) -> str:
        return f"{self.year}.{self.week}"

    @property
    def first_since_power_on(self) -> bool:
        return self.status == 0


# --- pure frame functions ---------------------------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16/Modbus: ``crc16(bytes([250, 73, 1])) == 0xA1A7`` (sent as 161 167)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, high byte first."""
    return bytes(body) + crc16(body).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 3 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "big")


def _byte(name: str, value: int, low: int = 0, high: int = 255) -> int:
    if not low <= value <= high:
        raise ValueError(f"KELLER {name} must be in {low}..{high}, not {value}")
    return value


def build_f48(addr: int) -> bytes:
    """F48 (initialise): ``addr 48 crcH crcL``."""
    return with_crc(bytes([_byte("address", addr, 1, 250), F_INITIALISE]))


def build_f73(addr: int, channel: int) -> bytes:
    """F73 (read a channel as float): ``addr 73 CH crcH crcL``."""
    return with_crc(bytes([_byte("address", addr, 1, 250), F_READ_FLOAT, _byte("channel", channel)]))


def encode_f48_reply(addr: int, info: DeviceInfo) -> bytes:
    """The device's F48 reply (for simulators and transcript tests)."""
    fields = (info.device_class, info.group, info.year, info.week, info.buffer_size, info.status)
    return with_crc(bytes([addr, F_INITIALISE, *(_byte("F48 field", f) for f in fields)]))


def encode_f73_reply(addr: int, value: float, status: int) -> bytes:
    """The device's F73 reply: ``addr 73 B3 B2 B1 B0 STAT`` + CRC (value as float32)."""
    return with_crc(bytes([addr, F_READ_FLOAT]) + struct.pack(">f", value) + bytes([status]))


def encode_exception(addr: int, function: int, code: int) -> bytes:
    """An exception reply: ``addr (function | 0x80) code`` + CRC."""
    return with_crc(bytes([addr, (function | EXCEPTION_BIT) & 0xFF, _byte("exception", code)]))


def _address_ok(got: int, addr: int) -> bool:
    return 1 <= got <= 250 if addr == TRANSPARENT_ADDRESS else got == addr


def _unframe(reply: bytes, addr: int, function: int, length: int) -> bytes:
    """The data bytes of a reply, after checking length, CRC, address and function."""
    reply = bytes(reply)
    exception = len(reply) >= 2 and reply[1] == function | EXCEPTION_BIT
    expected = EXCEPTION_REPLY_LEN if exception else length
    if len(reply) != expected:
        raise InstrumentProtocolError(
            f"KELLER F{function}: reply of {len(reply)} bytes, expected {expected}: "
            f"{reply.hex(' ') or '(nothing)'}")
    if not crc_ok(reply):
        raise InstrumentProtocolError(f"KELLER F{function}: bad CRC in reply {reply.hex(' ')}")
    if not _address_ok(reply[0], addr):
        raise InstrumentProtocolError(
            f"KELLER F{function}: reply from address {reply[0]}, asked {addr}")
    if exception:
        raise KellerException(function, reply[2])
    if reply[1] != function:
        raise InstrumentProtocolError(
            f"KELLER F{function}: reply is for function {reply[1]}: {reply.hex(' ')}")
    return reply[2:-2]


def parse_f48(reply: bytes, addr: int) -> DeviceInfo:
    """``addr 48 Class Group Year Week BUF STAT crcH crcL`` -> :class:`DeviceInfo`."""
    return DeviceInfo(*_unframe(reply, addr, F_INITIALISE, F48_REPLY_LEN))


def parse_f73(reply: bytes, addr: int) -> tuple[float, int]:
    """``addr 73 B3 B2 B1 B0 STAT crcH crcL`` -> (value in the channel's unit, STAT).

    Raises :class:`KellerException` for an exception reply and InstrumentProtocolError for any
    other reply that is not a well-formed F73 answer from ``addr``.
    """
    data = _unframe(reply, addr, F_READ_FLOAT, F73_REPLY_LEN)
    (value,) = struct.unpack(">f", data[:4])
    return value, data[4]


def status_problems(status: int, channel: int) -> list[str]:
    """What in STAT makes a reading of ``channel`` invalid (the manual checks /STD and the
    channel's own bit: ``STAT & 0b10010010`` for P1 and TOB1)."""
    problems = []
    if status & STAT_POWER_UP:
        problems.append("power-up mode (/STD)")
    if channel < len(CHANNEL_NAMES) and status & (1 << channel):
        problems.append(f"measuring error on {CHANNEL_NAMES[channel]}")
    return problems


# --- the driver -------------------------------------------------------------------------------
class KellerGauge:
    """A KELLER Series 30 / X-Line transmitter on a serial port: the PressureGauge role.

    ====================  ========  ==============================================
    reading               F73 CH    unit on the wire -> returned
    ====================  ========  ==============================================
    read_pressure_Pa()    1 (P1)    bar -> Pa (absolute on a PAA transmitter)
    read_temperature_K()  4 (TOB1)  °C -> K (``temperature_channel=3`` reads T)
    read()                1, then 4 (pressure Pa, temperature K)
    ====================  ========  ==============================================

    Every request waits ``timeout_s`` for the reply to start and as long again for the rest
    (frames are read by their known length, never by a terminator). A silent device, a bad
    CRC, a truncated or garbled reply, a non-finite value or an error bit in STAT is retried up
    to ``retries`` times (after silence or a truncated reply with a bounded exponential backoff,
    so a late reply lands before the input is flushed; a whole frame is retried at once); then silence raises
    InstrumentTimeout and the rest InstrumentProtocolError. Exception 32 (or /STD set) sends
    F48 and repeats the request once; other exception replies raise :class:`KellerException`
    at once (asking again would get the same answer). A port that cannot be opened, read or
    written raises InstrumentGone. F48 is not sent on open: the first read triggers it through
    exception 32, as the manual's example does.

    F73 replies do not echo the channel, so after a request went unanswered or was cut short
    (its reply may still come, however late) the next request is preceded by a resync: F48,
    and every frame before its reply dropped (a device answers in order). A late reply costs a
    round trip; it is never taken for another request's (a temperature read as a pressure).
    """

    def __init__(
        self, port: str, address: int = TRANSPARENT_ADDRESS, baudrate: int = 9600,
        timeout_s: float = 0.5, retries: int = 2, *, temperature_channel: int = TOB1,
        backoff_s: float = 0.05, max_backoff_s: float = 1.0,
    ) -> None:
        _byte("address", address, 1, 250)
        if temperature_channel not in TEMPERATURE_CHANNELS:
            raise ValueError(f"temperature_channel must be one of {TEMPERATURE_CHANNELS} "
                             f"(T, TOB1, TOB2), not {temperature_channel}")
        if retries < 0 or timeout_s <= 0:
            raise ValueError("retries must be >= 0 and timeout_s > 0")
        self.port, self.address, self.timeout_s, self.retries = port, address, timeout_s, retries
        self.temperature_channel = temperature_channel
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.info: DeviceInfo | None = None  # from the last F48
        self.retried = RetriedFaults()
        # a request went unanswered or was cut short: its reply may still come, and F73 replies
        # do not say which channel they are for, so the next request is preceded by a resync
        self._unsure = False
        self.resyncs = 0  # how often that was needed
        try:
            self._serial: serial.Serial | None = serial.Serial(
                port, baudrate=baudrate, bytesize=8, parity="N", stopbits=1,
                timeout=timeout_s, write_timeout=timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise InstrumentGone(f"KELLER on {port}: cannot open the port: {exc}") from exc

    # --- readings (SI) -----------------------------------------------------------------------
    def read(self) -> tuple[float, float]:
        """(absolute pressure Pa, temperature K), read one after the other."""
        return self.read_pressure_Pa(), self.read_temperature_K()

    def read_pressure_Pa(self) -> float:
        return self.read_channel(P1) * PA_PER_BAR

    def read_temperature_K(self) -> float:
        return self.read_channel(self.temperature_channel) + ZERO_CELSIUS_K

    def read_channel(self, channel: int) -> float:
        """F73: the value of ``channel`` in its wire unit (bar or °C)."""
        _byte("channel", channel, 0, 5)
        try:
            return self._read_valid(channel)
        except KellerException as exc:
            if exc.code != EXC_INITIALISE:
                raise
        except _PowerUpMode:
            pass
        self.initialise()
        try:
            return self._read_valid(channel)
        except _PowerUpMode as exc:
            raise InstrumentProtocolError(str(exc)) from None

    def initialise(self) -> DeviceInfo:
        """F48: initialise the device (needed after every power-up); returns its identity."""
        request = build_f48(self.address)
        self.info = self._transact(
            request, F_INITIALISE, F48_REPLY_LEN, lambda r: parse_f48(r, self.address))
        return self.info

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError, termios.error):
                pass  # the port is gone already: closed is closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- one request, retried ----------------------------------------------------------------
    def _read_valid(self, channel: int) -> float:
        def parse(reply: bytes) -> float:
            value, status = parse_f73(reply, self.address)
            name = CHANNEL_NAMES[channel]
            if status & STAT_POWER_UP:
                raise _PowerUpMode(f"KELLER {name}: transmitter in power-up mode "
                                   f"(STAT {status:#04x}) even after F48")
            problems = status_problems(status, channel)
            if problems:
                raise InstrumentProtocolError(
                    f"KELLER {name}: invalid reading ({', '.join(problems)}; STAT {status:#04x})")
            if not math.isfinite(value):
                raise InstrumentProtocolError(f"KELLER {name}: non-finite value {value}")
            return value

        return self._transact(build_f73(self.address, channel), F_READ_FLOAT, F73_REPLY_LEN, parse)

    def _transact(
        self, request: bytes, function: int, length: int, parse: Callable[[bytes], _R],
    ) -> _R:
        last: InstrumentTimeout | InstrumentProtocolError | None = None
        for attempt in range(self.retries + 1):
            # after silence or a frame cut short the device may still be talking: back off so a
            # late reply lands before the flush; a whole frame that failed its CRC is over
            if attempt and isinstance(last, (InstrumentTimeout, TruncatedReply)):
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
            try:
                if self._unsure:
                    self._resync()
                return parse(self._exchange(request, function, length))
            except (KellerException, _PowerUpMode):
                raise  # the device's considered answer: repeating the request will not change it
            except (InstrumentTimeout, InstrumentProtocolError) as exc:
                if isinstance(exc, (InstrumentTimeout, TruncatedReply)):
                    self._unsure = True
                last = exc
                if attempt < self.retries:
                    self.retried.record(f"{type(exc).__name__}: {exc}")
        assert last is not None
        raise last

    def _exchange(self, request: bytes, function: int, length: int) -> bytes:
        """Send one request and read one reply by its known length (exception replies are 5)."""
        ser = self._port()
        try:
            ser.reset_input_buffer()  # whatever a late or garbled earlier reply left behind
            ser.write(request)
            head = ser.read(2)
            if len(head) < 2:
                if not head:
                    raise InstrumentTimeout(
                        f"KELLER F{function} on {self.port}: no reply within {self.timeout_s} s")
                raise TruncatedReply(f"KELLER F{function}: truncated reply {head.hex(' ')}")
            total = EXCEPTION_REPLY_LEN if head[1] == function | EXCEPTION_BIT else length
            reply = head + ser.read(total - 2)
        except serial.SerialTimeoutException as exc:
            raise InstrumentTimeout(f"KELLER on {self.port}: write timed out") from exc
        except (serial.SerialException, OSError, termios.error) as exc:
            raise InstrumentGone(f"KELLER on {self.port}: the port is gone: {exc}") from exc
        if len(reply) < total:
            raise TruncatedReply(
                f"KELLER F{function}: truncated reply ({len(reply)} of {total} bytes): "
                f"{reply.hex(' ')}")
        return reply

    def _resync(self) -> None:
        """Make sure no reply to an earlier request is still on its way, whatever its delay:
        send F48 and read frames until its reply, dropping the F73 replies before it. A device
        answers its requests in order, so a late reply always arrives before the F48's, and a
        late temperature can never be taken for the pressure asked next."""
        ser = self._port()
        self.resyncs += 1
        try:
            ser.reset_input_buffer()
            ser.write(build_f48(self.address))
            for _ in range(MAX_LATE_REPLIES + 1):
                head = ser.read(2)
                if len(head) < 2:
                    if not head:
                        raise InstrumentTimeout(
                            f"KELLER F48 (resync) on {self.port}: no reply within "
                            f"{self.timeout_s} s")
                    raise TruncatedReply(f"KELLER F48 (resync): truncated reply {head.hex(' ')}")
                total = _FRAME_LENGTHS.get(head[1])
                if total is None:
                    raise InstrumentProtocolError(
                        f"KELLER F48 (resync): not a reply: {head.hex(' ')}")
                frame = head + ser.read(total - 2)
                if len(frame) < total:
                    raise TruncatedReply(f"KELLER F48 (resync): truncated reply {frame.hex(' ')}")
                if head[1] & ~EXCEPTION_BIT == F_INITIALISE:
                    self.info = parse_f48(frame, self.address)  # bad CRC: still unsure
                    self._unsure = False
                    return
                # a late reply to an earlier request: dropped
        except serial.SerialTimeoutException as exc:
            raise InstrumentTimeout(f"KELLER on {self.port}: write timed out") from exc
        except (serial.SerialException, OSError, termios.error) as exc:
            raise InstrumentGone(f"KELLER on {self.port}: the port is gone: {exc}") from exc
        raise InstrumentProtocolError(
            f"KELLER F48 (resync): more than {MAX_LATE_REPLIES} replies before its own")

    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise InstrumentGone(f"KELLER on {self.port}: the driver is closed")
        return self._serial


MAX_LATE_REPLIES = 8  # late replies a resync drops before it gives up (the retries bound them)
_FRAME_LENGTHS = {F_INITIALISE: F48_REPLY_LEN, F_READ_FLOAT: F73_REPLY_LEN,
                  F_INITIALISE | EXCEPTION_BIT: EXCEPTION_REPLY_LEN,
                  F_READ_FLOAT | EXCEPTION_BIT: EXCEPTION_REPLY_LEN}


class TruncatedReply(InstrumentProtocolError):
    """A reply cut short: the rest may still be on its way (retried after the backoff)."""


class _PowerUpMode(InstrumentProtocolError):
    """/STD was set in STAT: the device wants F48 (handled like exception 32)."""

