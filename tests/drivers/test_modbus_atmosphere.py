"""Glovebox atmosphere over Modbus: the codec, the simulated transmitter, the driver against it.

Everything runs on real TCP sockets on 127.0.0.1: the simulator is a pymodbus ModbusTcpServer in
its own thread, read either by a plain pymodbus client or by the production driver, unpatched.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from drivers.base import (
    AtmosphereSensor,
    InstrumentGone,
    InstrumentProtocolError,
    InstrumentTimeout,
)
from drivers.modbus_atmosphere import (
    NARIG_O2,
    VAISALA_H2O,
    ModbusAtmosphereSensor,
    ModbusExceptionReply,
    RegisterMap,
    RegisterMapError,
    RegisterSpec,
    decode,
    encode,
    in_device_units,
    in_rig_units,
    map_from_dict,
)
from rig.clock import VirtualClock
from rig.sim.glovebox import (
    GloveboxModel,
    GloveboxParams,
    ModbusFaultProfile,
    SimulatedModbusSensor,
)
from tests.support.pty_replay import SILENCE, ReplayDevice

DATATYPE = ModbusTcpClient.DATATYPE
FLOAT32_REL = 2.0**-23  # float32 relative resolution


def float32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def words_be(x: float) -> list[int]:
    """A float32 as two registers, most-significant word first (struct, not our codec)."""
    return list(struct.unpack(">2H", struct.pack(">f", x)))


class Constant:
    """An atmosphere that never changes: O2 1.5 ppm, H2O 0.25 ppm, 300 K."""

    def value(self, species: str, t: float) -> float:
        return {"o2": 1.5, "h2o": 0.25}[species]

    def temperature_K(self, t: float) -> float:
        return 300.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1_767_225_600.0)


@pytest.fixture
def model(clock: VirtualClock) -> GloveboxModel:
    return GloveboxModel(seed=7, clock=clock)


Serve = Callable[..., SimulatedModbusSensor]


@pytest.fixture
def serve(clock: VirtualClock) -> Iterator[Serve]:
    """Start simulators (closed at the end of the test): serve(model, map, **options)."""
    started: list[SimulatedModbusSensor] = []

    def start(model: object, map: RegisterMap, **options: object) -> SimulatedModbusSensor:
        sim = SimulatedModbusSensor(model, map, clock, **options)  # type: ignore[arg-type]
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.close()


def driver(sim: SimulatedModbusSensor, map: RegisterMap | None = None,
           **options: object) -> ModbusAtmosphereSensor:
    options = {"timeout_s": 0.5, "backoff_s": 0.005, **options}
    return ModbusAtmosphereSensor(map or sim.map, host="127.0.0.1", port=sim.port,
                                  **options)  # type: ignore[arg-type]


def plain_read(sim: SimulatedModbusSensor, address: int, count: int, device_id: int,
               function: str = "holding") -> list[int]:
    with ModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0) as client:
        read = (client.read_holding_registers if function == "holding"
                else client.read_input_registers)
        reply = read(address, count=count, device_id=device_id)
        assert not reply.isError(), reply
        return list(reply.registers)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound (so no other test's server can take it) but not
    listening, so a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ---------------------------------------------------------------- the simulator, plain client

@pytest.mark.parametrize("order, expected", [("big", [0x3FC0, 0x0000]),
                                             ("little", [0x0000, 0x3FC0])])
def test_simulator_serves_a_known_value_in_either_word_order(serve: Serve, order: str,
                                                             expected: list[int]) -> None:
    sim = serve(Constant(), NARIG_O2, word_order=order)
    assert plain_read(sim, 0x0000, 2, NARIG_O2.device_id) == expected  # 1.5 = 0x3FC00000


def test_simulator_serves_vaisala_registers_least_significant_word_first(serve: Serve) -> None:
    sim = serve(Constant(), VAISALA_H2O)
    assert plain_read(sim, 0x0014, 2, 240) == words_be(0.25)[::-1]
    assert plain_read(sim, 0x0002, 2, 240) == words_be(300.0 - 273.15)[::-1]  # degC on the wire


@pytest.mark.parametrize("order", ["big", "little"])
def test_simulator_serves_the_model_at_the_clock_time(serve: Serve, model: GloveboxModel,
                                                      clock: VirtualClock, order: str) -> None:
    sim = serve(model, NARIG_O2, word_order=order)
    for _ in range(3):
        regs = plain_read(sim, 0x0000, 2, NARIG_O2.device_id)
        value = ModbusTcpClient.convert_from_registers(regs, DATATYPE.FLOAT32, word_order=order)
        assert value == float32(model.value("o2", clock.now()))
        clock.advance(3600.0)


def test_simulator_answers_unserved_registers_and_other_devices_with_exceptions(
        serve: Serve) -> None:
    sim = serve(Constant(), NARIG_O2)
    with ModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0) as client:
        assert client.read_holding_registers(0x0100, count=2, device_id=1).exception_code == 2
        assert client.read_holding_registers(0x0000, count=2, device_id=9).exception_code == 11
        assert client.write_register(0x0000, 5, device_id=1).exception_code == 2  # read-only


def test_simulator_close_is_idempotent_and_stops_its_thread(clock: VirtualClock) -> None:
    sim = SimulatedModbusSensor(Constant(), NARIG_O2, clock).start()
    assert sim.running and sim.port > 0
    sim.close()
    sim.close()
    assert not sim.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=1).close()


# ---------------------------------------------------------------- the driver against it

def test_driver_reads_vaisala_map_and_converts_celsius_to_kelvin(
        serve: Serve, model: GloveboxModel, clock: VirtualClock) -> None:
    sim = serve(model, VAISALA_H2O)
    with driver(sim) as sensor:
        assert isinstance(sensor, AtmosphereSensor)
        for _ in range(3):
            reading = sensor.read()
            t = clock.now()
            assert set(reading) == {"h2o_ppm", "temperature_K"}
            assert reading["h2o_ppm"] == pytest.approx(model.value("h2o", t), rel=FLOAT32_REL)
            # float32 degC carries ~2e-6 K at room temperature
            assert reading["temperature_K"] == pytest.approx(model.temperature_K(t), abs=1e-5)
            assert 290 < reading["temperature_K"] < 305
            clock.advance(1800.0)


def test_driver_reads_narig_o2_map_most_significant_word_first(
        serve: Serve, model: GloveboxModel, clock: VirtualClock) -> None:
    sim = serve(model, NARIG_O2)
    with driver(sim) as sensor:
        reading = sensor.read()
    assert reading == {"o2_ppm": float32(model.value("o2", clock.now()))}


def test_driver_with_the_wrong_word_order_reads_garbage_not_the_value(
        serve: Serve, model: GloveboxModel, clock: VirtualClock) -> None:
    sim = serve(model, NARIG_O2, word_order="little")
    with driver(sim, NARIG_O2) as sensor:
        assert sensor.read()["o2_ppm"] != pytest.approx(model.value("o2", clock.now()), rel=0.1)


def test_driver_passes_nan_through_when_the_reading_is_unavailable(
        serve: Serve, model: GloveboxModel, clock: VirtualClock) -> None:
    model.dropout(at_s=60.0, duration_s=120.0, species=("h2o",))
    sim = serve(model, VAISALA_H2O)
    with driver(sim) as sensor:
        assert math.isfinite(sensor.read()["h2o_ppm"])
        clock.advance(90.0)
        reading = sensor.read()
        assert math.isnan(reading["h2o_ppm"])
        assert math.isfinite(reading["temperature_K"])
        clock.advance(120.0)
        assert math.isfinite(sensor.read()["h2o_ppm"])


def test_a_breach_shows_in_the_readings_and_decays(
        serve: Serve, model: GloveboxModel, clock: VirtualClock) -> None:
    model.breach(at_s=600.0, peak_ppm=8.0, decay_s=900.0, species=("o2",))
    sim = serve(model, NARIG_O2)
    with driver(sim) as sensor:
        before = sensor.read()["o2_ppm"]
        clock.advance(600.0)
        peak = sensor.read()["o2_ppm"]
        clock.advance(3 * 900.0)
        later = sensor.read()["o2_ppm"]
    assert before < 1.0 and peak > 5.0
    assert before < later < peak
    assert peak == pytest.approx(model.value("o2", clock.now() - 3 * 900.0), rel=FLOAT32_REL)
    assert peak - before == pytest.approx(8.0, abs=0.5)
    assert later - before == pytest.approx(8.0 * math.exp(-3), abs=0.5)


def test_driver_reads_scaled_integers_from_input_registers(
        serve: Serve, model: GloveboxModel, clock: VirtualClock) -> None:
    map = RegisterMap(device_id=3, registers=(
        RegisterSpec("o2_ppm", 0x0010, "uint16", scale=0.001, function="input"),
        RegisterSpec("h2o_ppm", 0x0011, "uint16", scale=0.001, function="input"),
        RegisterSpec("temperature_K", 0x0020, "int16", scale=0.01, unit="degC",
                     function="input"),
    ))
    sim = serve(model, map)
    with driver(sim) as sensor:
        reading = sensor.read()
    t = clock.now()
    assert reading["o2_ppm"] == pytest.approx(model.value("o2", t), abs=0.0005)
    assert reading["h2o_ppm"] == pytest.approx(model.value("h2o", t), abs=0.0005)
    assert reading["temperature_K"] == pytest.approx(model.temperature_K(t), abs=0.005)


def test_driver_speaks_rtu_framing(serve: Serve, model: GloveboxModel,
                                   clock: VirtualClock) -> None:
    """RTU frames (address, PDU, CRC) through pyserial's socket:// transport."""
    sim = serve(model, VAISALA_H2O, framing="rtu")
    with ModbusAtmosphereSensor(VAISALA_H2O, serial_port=f"socket://127.0.0.1:{sim.port}",
                                timeout_s=0.5) as sensor:
        reading = sensor.read()
    assert reading["h2o_ppm"] == pytest.approx(model.value("h2o", clock.now()), rel=FLOAT32_REL)


def rtu(*body: int) -> bytes:
    """An RTU frame: body + CRC-16/Modbus (poly 0xA001, init 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in body:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes(body) + crc.to_bytes(2, "little")


def float_le_bytes(x: float) -> tuple[int, ...]:
    """A float32 as a register reply's 4 data bytes, least-significant word first."""
    hi, lo = words_be(x)
    return (*lo.to_bytes(2, "big"), *hi.to_bytes(2, "big"))


def test_rtu_transcript_of_the_vaisala_map() -> None:
    """The exact bytes on an RS-485 line, and what the driver does with each answer."""
    ask_h2o = rtu(0xF0, 0x03, 0x00, 0x14, 0x00, 0x02)  # device 240, read holding 0x14, 2 regs
    ask_t = rtu(0xF0, 0x03, 0x00, 0x02, 0x00, 0x02)
    h2o = rtu(0xF0, 0x03, 0x04, *float_le_bytes(0.25))
    t_24c = rtu(0xF0, 0x03, 0x04, *float_le_bytes(24.0))
    nan = rtu(0xF0, 0x03, 0x04, 0x00, 0x00, 0x7F, 0xC0)  # quiet NaN, LSW first
    busy = rtu(0xF0, 0x83, 0x06)  # exception 6: retried
    illegal = rtu(0xF0, 0x83, 0x02)  # exception 2: raised at once
    transcript = [
        (ask_h2o, h2o), (ask_t, t_24c),                                    # read 1
        (ask_h2o, busy), (ask_h2o, nan), (ask_t, SILENCE), (ask_t, t_24c),  # read 2
        (ask_h2o, illegal),                                                # read 3
    ]
    with ReplayDevice(transcript) as device, ModbusAtmosphereSensor(
            VAISALA_H2O, serial_port=device.port, timeout_s=0.2, retries=1,
            backoff_s=0.001) as sensor:
        assert sensor.read() == {"h2o_ppm": 0.25, "temperature_K": pytest.approx(297.15)}
        second = sensor.read()
        assert math.isnan(second["h2o_ppm"])
        assert second["temperature_K"] == pytest.approx(297.15)
        with pytest.raises(ModbusExceptionReply, match="exception 2 .illegal data address"):
            sensor.read()
        device.check()


# ---------------------------------------------------------------- faults

def test_exception_reply_raises_protocol_error_naming_code_and_register(
        serve: Serve, model: GloveboxModel) -> None:
    sim = serve(model, VAISALA_H2O, fault=ModbusFaultProfile(exception=1.0))
    with driver(sim, retries=1) as sensor, pytest.raises(ModbusExceptionReply) as info:
        sensor.read()
    assert isinstance(info.value, InstrumentProtocolError)
    assert info.value.code == 4
    message = str(info.value)
    assert "exception 4 (server device failure)" in message
    assert "0x0014" in message and "h2o_ppm" in message
    assert sim.faults["exception"] == 2  # one try, one retry


def test_illegal_address_is_not_retried(serve: Serve, model: GloveboxModel) -> None:
    sim = serve(model, NARIG_O2)
    wrong = RegisterMap(device_id=1, registers=(RegisterSpec("o2_ppm", 0x0040, "float32"),))
    with driver(sim, wrong) as sensor, pytest.raises(InstrumentProtocolError,
                                                     match="0x0040.*exception 2 "):
        sensor.read()
    assert sim.faults["requests"] == 0  # pymodbus refused it before the device's action


def test_wrong_device_id_names_the_id(serve: Serve, model: GloveboxModel) -> None:
    sim = serve(model, VAISALA_H2O)
    with driver(sim, RegisterMap(7, VAISALA_H2O.registers), retries=0) as sensor, \
            pytest.raises(ModbusExceptionReply, match="exception 11 .*device id 7"):
        sensor.read()


def test_no_reply_raises_timeout(serve: Serve, model: GloveboxModel) -> None:
    sim = serve(model, NARIG_O2, fault=ModbusFaultProfile(no_reply=1.0))
    with driver(sim, timeout_s=0.05, retries=1) as sensor, pytest.raises(
            InstrumentTimeout, match="no answer within 0.05 s"):
        sensor.read()
    assert sim.faults["no_reply"] == 2


def test_disconnect_on_every_request_raises_gone(serve: Serve, model: GloveboxModel) -> None:
    sim = serve(model, NARIG_O2, fault=ModbusFaultProfile(disconnect=1.0))
    with driver(sim, retries=2) as sensor, pytest.raises(InstrumentGone, match="closed"):
        sensor.read()
    assert sim.faults["disconnect"] == 3


def test_server_gone_raises_gone(serve: Serve, model: GloveboxModel) -> None:
    sim = serve(model, NARIG_O2)
    with driver(sim, retries=1) as sensor:
        sensor.read()
        sim.close()
        with pytest.raises((InstrumentGone, InstrumentTimeout)):
            sensor.read()


def test_nothing_listening_raises_gone_after_bounded_backoff() -> None:
    sleeps: list[float] = []
    with closed_port() as port:
        sensor = ModbusAtmosphereSensor(NARIG_O2, host="127.0.0.1", port=port,
                                        retries=5, backoff_s=0.1, backoff_max_s=0.3,
                                        sleep=sleeps.append)
        with sensor, pytest.raises(InstrumentGone, match="cannot connect"):
            sensor.read()
    assert sleeps == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])


def test_transient_faults_are_ridden_out_by_retries(serve: Serve, model: GloveboxModel,
                                                    clock: VirtualClock) -> None:
    fault = ModbusFaultProfile(no_reply=0.05, exception=0.1, disconnect=0.1, seed=11)
    sim = serve(model, NARIG_O2, fault=fault)
    with driver(sim, timeout_s=0.05, retries=4) as sensor:
        for _ in range(40):
            assert sensor.read()["o2_ppm"] == float32(model.value("o2", clock.now()))
            clock.advance(60.0)
    assert sim.faults["exception"] and sim.faults["disconnect"] and sim.faults["no_reply"]


def test_closed_driver_refuses_to_read(serve: Serve, model: GloveboxModel) -> None:
    sensor = driver(serve(model, NARIG_O2))
    sensor.close()
    with pytest.raises(InstrumentGone, match="closed"):
        sensor.read()


# ---------------------------------------------------------------- the pure codec

FLOAT_SPECS = {order: RegisterSpec("o2_ppm", 0, "float32", word_order=order)
               for order in ("big", "little")}
register = st.integers(0, 0xFFFF)


@given(st.floats(width=32, allow_nan=False), st.sampled_from(["big", "little"]))
def test_float32_round_trips_in_both_word_orders(x: float, order: str) -> None:
    spec = FLOAT_SPECS[order]
    regs = encode(x, spec)
    assert decode(regs, spec) == x
    # pymodbus's own converter agrees on the wire layout
    assert regs == ModbusTcpClient.convert_to_registers(x, DATATYPE.FLOAT32, word_order=order)


@given(st.lists(register, min_size=2, max_size=2), st.sampled_from(["big", "little"]))
def test_any_two_registers_decode_like_pymodbus_and_re_encode(regs: list[int],
                                                              order: str) -> None:
    spec = FLOAT_SPECS[order]
    value = decode(regs, spec)
    theirs = ModbusTcpClient.convert_from_registers(regs, DATATYPE.FLOAT32, word_order=order)
    if math.isnan(value):
        assert math.isnan(theirs)
        assert math.isnan(decode(encode(value, spec), spec))
    else:
        assert value == theirs
        assert encode(value, spec) == regs


def test_nan_decodes_as_nan_in_both_orders() -> None:
    nan_be = [0x7FC0, 0x0000]
    assert math.isnan(decode(nan_be, FLOAT_SPECS["big"]))
    assert math.isnan(decode(nan_be[::-1], FLOAT_SPECS["little"]))


@given(register, st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0]),
       st.sampled_from(["int16", "uint16"]))
def test_scaled_integers_round_trip(raw: int, scale: float, kind: str) -> None:
    spec = RegisterSpec("temperature_K", 0, kind, scale=scale, unit="degC")
    value = decode([raw], spec)
    signed = raw - 0x10000 if kind == "int16" and raw >= 0x8000 else raw
    assert value == pytest.approx(signed * scale)
    assert encode(value, spec) == [raw]


def test_int16_encoding_refuses_nan_and_out_of_range() -> None:
    spec = RegisterSpec("o2_ppm", 0, "int16", scale=0.01)
    with pytest.raises(ValueError):
        encode(math.nan, spec)
    with pytest.raises(ValueError, match="outside int16"):
        encode(400.0, spec)
    with pytest.raises(ValueError):
        encode(-1.0, RegisterSpec("o2_ppm", 0, "uint16"))


@given(st.binary(max_size=8).map(lambda b: [x * 257 for x in b]))
def test_decode_of_a_wrong_register_count_is_a_protocol_error(regs: list[int]) -> None:
    spec = FLOAT_SPECS["big"]
    if len(regs) == spec.count:
        assert isinstance(decode(regs, spec), float)
    else:
        with pytest.raises(InstrumentProtocolError, match="expected 2 register"):
            decode(regs, spec)


@given(st.floats(-100, 100))
def test_celsius_converts_to_kelvin_and_back(c: float) -> None:
    spec = RegisterSpec("temperature_K", 2, "float32", unit="degC")
    assert in_rig_units(c, spec) == pytest.approx(c + 273.15)
    assert in_device_units(in_rig_units(c, spec), spec) == pytest.approx(c, abs=1e-9)
    assert in_rig_units(c, RegisterSpec("h2o_ppm", 0, "float32", unit="ppmv")) == c


# ---------------------------------------------------------------- the station-file table

WHERE = "lab.toml: atmosphere.map"


def good_table() -> dict[str, object]:
    return {"device_id": 240, "registers": [
        {"quantity": "h2o_ppm", "address": 0x0014, "type": "float32",
         "word_order": "little", "unit": "ppmv"},
        {"quantity": "temperature_K", "address": 0x0002, "type": "float32",
         "word_order": "little", "unit": "degC"},
    ]}


def test_map_from_dict_builds_the_vaisala_map() -> None:
    assert map_from_dict(good_table(), WHERE) == VAISALA_H2O


def test_map_from_dict_accepts_a_preset_with_another_device_id() -> None:
    assert map_from_dict({"preset": "narig_o2"}, WHERE) == NARIG_O2
    assert map_from_dict({"preset": "VAISALA_H2O", "device_id": 17}, WHERE).device_id == 17


def test_unit_defaults_to_the_unit_in_the_quantity_name() -> None:
    assert RegisterSpec("temperature_K", 0, "int16").unit == "K"
    assert RegisterSpec("o2_ppm", 0, "float32").unit == "ppm"


def _edit(path: str, value: object) -> dict[str, object]:
    table = good_table()
    registers = table["registers"]
    assert isinstance(registers, list)
    if path == "r1":
        assert isinstance(value, dict)
        registers[1].update(value)
    elif path.startswith("r1."):
        registers[1][path[3:]] = value
    elif value is _DELETE:
        del table[path]
    else:
        table[path] = value
    return table


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    ("r1.type", "float", "registers[1].type: 'float' is not one of: float32, int16, uint16"),
    ("r1.unit", "ppm", "registers[1].unit: 'ppm' is not one of: K, degC"),
    ("r1.word_order", "middle", "registers[1].word_order: 'middle' is not one of: big, little"),
    ("r1.quantity", "co2_ppm", "registers[1].quantity: 'co2_ppm' is not one of: o2_ppm"),
    ("r1.address", 70000, "registers[1].address: 70000 is not an integer in 0..65534"),
    ("r1.address", "0x14", "registers[1].address: '0x14' is not an integer"),
    ("r1.address", 0x0015, "registers[1].address: 0x0015 overlaps registers[0]"),
    ("r1", {"quantity": "h2o_ppm", "unit": "ppm"},
     "registers[1].quantity: 'h2o_ppm' is already read by registers[0]"),
    ("r1.scale", 0, "registers[1].scale: 0 is not a finite, non-zero number"),
    ("r1.function", "coil", "registers[1].function: 'coil' is not one of: holding, input"),
    ("r1.adress", 3, "registers[1].adress: unknown field (allowed: quantity, address"),
    ("device_id", 300, "device_id: 300 is not an integer in 0..255"),
    ("device_id", _DELETE, "device_id: missing (required)"),
    ("registers", [], "registers: at least one register is needed"),
    ("registers", "h2o", "registers: expected a list of tables, got str"),
    ("registers", [3], "registers[0]: expected a table, got int"),
])
def test_map_from_dict_errors_name_the_field_and_what_is_allowed(
        path: str, value: object, message: str) -> None:
    with pytest.raises(RegisterMapError) as info:
        map_from_dict(_edit(path, value), WHERE)
    assert str(info.value).startswith(f"{WHERE}.")
    assert message in str(info.value)


def test_missing_register_field_and_unknown_preset_are_named() -> None:
    table = good_table()
    del table["registers"][0]["address"]  # type: ignore[index]
    with pytest.raises(RegisterMapError, match=r"registers\[0\]\.address: missing"):
        map_from_dict(table, WHERE)
    with pytest.raises(RegisterMapError, match="preset: 'dryer' is not one of: vaisala_h2o"):
        map_from_dict({"preset": "dryer"}, WHERE)


# ---------------------------------------------------------------- the atmosphere model

def test_model_is_deterministic_for_a_seed(clock: VirtualClock) -> None:
    a, b = GloveboxModel(3, clock), GloveboxModel(3, clock)
    times = [clock.now() + k * 37.3 for k in range(200)]
    assert [a.value("o2", t) for t in times] == [b.value("o2", t) for t in reversed(times)][::-1]
    assert [a.temperature_K(t) for t in times] == [b.temperature_K(t) for t in times]
    other = GloveboxModel(4, clock)
    assert [a.value("h2o", t) for t in times] != [other.value("h2o", t) for t in times]


def test_model_baseline_is_sub_ppm_with_noise_and_drift(clock: VirtualClock) -> None:
    quiet = GloveboxParams(regen_period_s=0)
    for seed in range(5):
        m = GloveboxModel(seed, clock, quiet)
        for species in ("o2", "h2o"):
            day = [m.value(species, clock.now() + k * 60.0) for k in range(1440)]
            assert 0.0 <= min(day) and max(day) < 0.5
            assert 0.05 < sum(day) / len(day) < 0.35
            assert len(set(day)) > 1000  # noisy, not constant


def test_model_regeneration_bumps_come_back_every_period(clock: VirtualClock) -> None:
    params = GloveboxParams(regen_period_s=6 * 3600.0)
    m, flat = GloveboxModel(1, clock, params), GloveboxModel(1, clock, GloveboxParams(
        regen_period_s=0))
    bumps = [max(m.value("h2o", t) - flat.value("h2o", t) for t in
                 (clock.now() + p * params.regen_period_s + k * 60.0 for k in range(360)))
             for p in range(3)]
    assert bumps == pytest.approx([params.regen_peak_ppm[1]] * 3, abs=0.02)


def test_model_breach_and_dropout_affect_only_the_named_species(clock: VirtualClock) -> None:
    m = GloveboxModel(2, clock)
    t0 = clock.now()
    m.breach(at_s=100.0, peak_ppm=5.0, decay_s=50.0, species=("h2o",))
    m.dropout(at_s=500.0, duration_s=10.0, species=("o2",))
    assert m.value("h2o", t0 + 100.0) - m.value("h2o", t0 + 99.0) > 4.5
    assert m.value("o2", t0 + 100.0) < 1.0
    assert math.isnan(m.value("o2", t0 + 505.0)) and not math.isnan(m.value("h2o", t0 + 505.0))
    with pytest.raises(ValueError, match="'n2' is not one of"):
        m.breach(at_s=0.0, peak_ppm=1.0, decay_s=1.0, species=("n2",))
