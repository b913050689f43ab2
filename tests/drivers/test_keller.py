"""KELLER Series 30 pressure transmitter: the wire format byte for byte, the simulated
transmitter answered by a plain serial client, and the production driver against it measuring
gas from a simulated Na cell in a sealed holder (temperature-compensated)."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import (
    InstrumentGone,
    InstrumentProtocolError,
    InstrumentTimeout,
    PressureGauge,
)
from drivers.keller import (
    EXC_INITIALISE,
    P1,
    STAT_POWER_UP,
    DeviceInfo,
    KellerException,
    KellerGauge,
    T,
    build_f48,
    build_f73,
    crc16,
    encode_exception,
    encode_f73_reply,
    parse_f48,
    parse_f73,
    with_crc,
)
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keller import R_J_MOL_K, FaultProfile, GasHolder, SimulatedKeller

HEADSPACE_ML = 5.0
V_M3 = HEADSPACE_ML * 1e-6


# ------------------------------------------------------------------------------ the wire format
def test_crc_matches_the_manual_examples_and_the_modbus_check_value():
    assert crc16(bytes([250, 73, 1])) == 0xA1A7  # manual: 250 73 1 161 167
    assert crc16(bytes([250, 48])) == 0x0443  # manual: 250 48 4 67
    assert crc16(b"123456789") == 0x4B37  # the CRC-16/MODBUS catalogue check value


def test_frame_builders_are_byte_exact():
    assert build_f73(250, 1) == bytes([250, 73, 1, 161, 167])
    assert build_f48(250) == bytes([250, 48, 4, 67])
    assert build_f73(1, 4) == bytes([1, 73, 4, 83, 22])
    assert build_f73(250, 3) == bytes([250, 73, 3, 96, 38])
    assert build_f48(1) == bytes([1, 48, 52, 0])
    with pytest.raises(ValueError):
        build_f48(251)
    with pytest.raises(ValueError):
        build_f73(0, 1)


def test_parse_f73_reads_a_big_endian_float_and_the_status_byte():
    assert parse_f73(bytes([1, 73, 63, 128, 0, 0, 0, 92, 56]), 1) == (1.0, 0)
    value, status = parse_f73(with_crc(bytes([7, 73, 0x3F, 0x81, 0xB2, 0x2D, 0x12])), 250)
    assert value == pytest.approx(1.01325, abs=1e-7) and status == 0x12


def test_parse_f73_rejects_bad_crc_other_address_other_function_and_short_frames():
    good = bytes([1, 73, 63, 128, 0, 0, 0, 92, 56])
    for reply, address in [
        (good[:-1] + bytes([57]), 1),  # bad CRC
        (good, 2),  # another device answered
        (with_crc(bytes([1, 74, 63, 128, 0, 0, 0])), 1),  # another function
        (good[:6], 1),  # truncated
        (b"", 1),
    ]:
        with pytest.raises(InstrumentProtocolError):
            parse_f73(reply, address)


def test_exception_replies_carry_their_code():
    reply = bytes([1, 201, 32, 136, 119])
    assert reply == encode_exception(1, 73, 32)
    with pytest.raises(KellerException) as err:
        parse_f73(reply, 250)
    assert err.value.code == EXC_INITIALISE and err.value.function == 73
    assert "F48" in str(err.value)


def test_parse_f48_returns_class_group_and_firmware():
    info = parse_f48(bytes([1, 48, 5, 20, 10, 20, 10, 0, 238, 196]), 250)
    assert info == DeviceInfo(5, 20, 10, 20, 10, 0)
    assert info.firmware == "10.20" and info.first_since_power_on


@settings(deadline=None)  # pure functions: a loaded CI machine must not fail them on time
@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    status=st.integers(0, 255),
    address=st.integers(1, 249),
)
def test_f73_round_trips_any_finite_float32(value, status, address):
    reply = encode_f73_reply(address, value, status)
    assert parse_f73(reply, address) == (value, status)
    assert parse_f73(reply, 250) == (value, status)


@settings(deadline=None)
@given(st.binary(max_size=16), st.sampled_from([1, 250]))
def test_parsers_of_arbitrary_bytes_raise_only_protocol_errors(data, address):
    try:
        value, status = parse_f73(data, address)
        assert isinstance(value, float) and 0 <= status <= 255
    except InstrumentProtocolError:
        pass
    try:
        assert parse_f48(data, address).device_class in range(256)
    except InstrumentProtocolError:
        pass


@settings(deadline=None)
@given(st.binary(min_size=4, max_size=12))
def test_replies_with_a_valid_crc_but_any_content_raise_only_protocol_errors(body):
    reply = with_crc(body)  # gets past the CRC check: exercises the checks after it
    for parse in (parse_f73, parse_f48):
        try:
            parse(reply, 250)
        except InstrumentProtocolError:
            pass


# ------------------------------------------------------------------------------ the simulator
def make_cell() -> NaCell:
    return NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=1)


@contextmanager
def station(
    fault: FaultProfile | None = None, sim_address: int = 1, **gauge_kw: object,
) -> Iterator[tuple[NaCell, GasHolder, SimulatedKeller, KellerGauge, VirtualClock]]:
    clock = VirtualClock(start=0.0)
    cell = make_cell()
    holder = GasHolder(cell, HEADSPACE_ML, temperature_K=298.15, p0_Pa=101325.0)
    gauge_kw.setdefault("timeout_s", 0.2)
    with SimulatedKeller(holder, clock, address=sim_address, fault=fault) as sim:
        gauge = KellerGauge(sim.port, **gauge_kw)  # type: ignore[arg-type]
        try:
            yield cell, holder, sim, gauge, clock
        finally:
            gauge.close()


def test_simulator_answers_a_plain_serial_client_byte_for_byte():
    clock = VirtualClock(start=0.0)
    holder = GasHolder(make_cell(), HEADSPACE_ML)
    with SimulatedKeller(holder, clock, address=1) as sim, \
            serial.Serial(sim.port, 9600, timeout=0.5) as ser:
        def ask(request: bytes, n: int) -> bytes:
            ser.write(request)
            return ser.read(n)

        # powered up: F73 first gets exception 32, as the manual's example expects
        assert ask(bytes([250, 73, 1, 161, 167]), 5) == bytes([1, 201, 32, 136, 119])
        assert ask(bytes([250, 48, 4, 67]), 10) == bytes([1, 48, 5, 20, 10, 20, 10, 0, 238, 196])
        assert ask(build_f48(1), 10)[7] == 1  # STAT 1: already initialised
        # P1 = 1.01325 bar (float32 3F 81 B2 2D), STAT 0, CRC high byte first
        assert ask(bytes([250, 73, 1, 161, 167]), 9) == bytes(
            [1, 73, 63, 129, 178, 45, 0, 215, 132])
        tob1 = ask(build_f73(1, 4), 9)
        assert struct.unpack(">f", tob1[2:6])[0] == pytest.approx(25.0, abs=1e-5)
        assert ask(build_f73(1, 6), 5) == encode_exception(1, 73, 2)  # CH > 5
        assert ask(with_crc(bytes([1, 69])), 5) == encode_exception(1, 69, 1)  # no F69 here
        assert ask(with_crc(bytes([1, 73])), 5) == encode_exception(1, 73, 3)  # no channel
        assert math.isnan(struct.unpack(">f", ask(build_f73(1, 2), 9)[2:6])[0])  # no P2
        # silence: another device's address, and a request with a bad CRC
        ser.timeout = 0.2
        assert ask(build_f73(2, 1), 9) == b""
        assert ask(bytes([250, 73, 1, 161, 166]), 9) == b""
        assert ask(build_f73(250, 1), 9)[:2] == bytes([1, 73])  # and it still answers


def test_simulator_close_is_idempotent_and_start_after_close_does_nothing():
    sim = SimulatedKeller(GasHolder(make_cell(), HEADSPACE_ML), VirtualClock(start=0.0))
    sim.start()
    sim.start()
    sim.close()
    sim.close()
    sim.start()


# ------------------------------------------------------------------------------ the driver
def moles(pressure_Pa: float, temperature_K: float) -> float:
    return pressure_Pa * V_M3 / (R_J_MOL_K * temperature_K)


def test_gauge_fills_the_pressure_gauge_role_and_initialises_on_exception_32():
    with station() as (_, _, sim, gauge, _):
        assert isinstance(gauge, PressureGauge)
        assert not sim.initialised
        pressure_Pa, temperature_K = gauge.read()
        assert pressure_Pa == pytest.approx(101325.0, rel=1e-6)
        assert temperature_K == pytest.approx(298.15, abs=1e-4)
        assert sim.initialised and gauge.info is not None and gauge.info.device_class == 5
        assert gauge.initialise().status == 1


def test_pressure_rises_with_the_cells_gas_and_pv_over_rt_recovers_the_moles():
    with station() as (cell, holder, _, gauge, _):
        p0, t0 = gauge.read()
        for _ in range(60):  # one hour at 1 mA/cm^2: plate 1.13 mAh on a carbonate cell
            cell.apply_current(-1.13e-3, 60.0)
        p1, t1 = gauge.read()
        made = cell.gas_mol
        assert made > 1e-6  # µmol scale: about 3 µmol per mAh/cm² in carbonate
        assert p1 > p0 + 1000.0  # more than 10 mbar in 5 mL
        assert moles(p1, t1) - moles(p0, t0) == pytest.approx(made, rel=0.005)
        assert moles(p1, t1) == pytest.approx(holder.gas_mol, rel=1e-6)


def test_one_kelvin_moves_pressure_by_a_third_of_a_percent_but_not_the_moles():
    with station(address=1) as (cell, holder, _, gauge, clock):
        holder.set_temperature_profile(lambda t: 298.15 + min(t, 3600.0) / 3600.0)
        p0, t0 = gauge.read()
        clock.advance(3600.0)
        assert cell.temperature_K == pytest.approx(299.15)  # the clock pump moved the cell too
        p1, t1 = gauge.read()
        assert t1 - t0 == pytest.approx(1.0, abs=1e-4)
        assert (p1 - p0) / p0 == pytest.approx(1 / 298.15, rel=0.01)  # 0.34 %
        assert 330.0 < p1 - p0 < 350.0  # about 3.4 mbar at 1 bar
        assert moles(p1, t1) == pytest.approx(moles(p0, t0), rel=1e-5)


def test_temperature_channel_t_reads_the_same_holder_temperature():
    with station(temperature_channel=T) as (_, holder, _, gauge, _):
        holder.set_temperature(303.15)
        assert gauge.read_temperature_K() == pytest.approx(303.15, abs=1e-4)


def test_a_bad_crc_reply_is_retried():
    with station() as (_, _, sim, gauge, _):
        gauge.initialise()
        sim.set_faults(FaultProfile(bad_crc=1.0, max_faults=1))
        before = sim.requests
        assert gauge.read_pressure_Pa() == pytest.approx(101325.0, rel=1e-6)
        assert sim.faults == ["bad_crc"] and sim.requests - before == 2


def test_persistent_bad_crc_ends_in_a_protocol_error_after_the_retries():
    with station(retries=2, backoff_s=0.01) as (_, _, sim, gauge, _):
        gauge.initialise()
        sim.set_faults(FaultProfile(bad_crc=1.0))
        before = sim.requests
        with pytest.raises(InstrumentProtocolError, match="bad CRC"):
            gauge.read_pressure_Pa()
        assert sim.requests - before == 3


def test_silence_raises_instrument_timeout_after_the_retries():
    with station(fault=FaultProfile(no_reply=1.0), timeout_s=0.1, retries=2,
                 backoff_s=0.01) as (_, _, sim, gauge, _):
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeout):
            gauge.read_pressure_Pa()
        assert time.monotonic() - t0 >= 0.3
        assert sim.requests == 3 and sim.faults == ["no_reply"] * 3


def test_truncated_replies_are_retried_then_a_protocol_error():
    with station(retries=1, backoff_s=0.01) as (_, _, sim, gauge, _):
        gauge.initialise()
        sim.set_faults(FaultProfile(truncated=1.0, max_faults=1))
        assert gauge.read_pressure_Pa() == pytest.approx(101325.0, rel=1e-6)
        sim.set_faults(FaultProfile(truncated=1.0))
        with pytest.raises(InstrumentProtocolError, match="truncated"):
            gauge.read_pressure_Pa()


def test_a_seeded_mix_of_faults_is_ridden_out_by_the_retries():
    profile = FaultProfile(no_reply=0.05, bad_crc=0.1, truncated=0.05, seed=3)
    with station(fault=profile, timeout_s=0.2, retries=4, backoff_s=0.0) as (
            _, _, sim, gauge, _):
        readings = [gauge.read() for _ in range(20)]
        assert all(p == pytest.approx(101325.0, rel=1e-6) for p, _ in readings)
        assert sim.faults  # some were injected


def test_a_power_cycle_mid_run_is_recovered_with_f48():
    with station() as (_, _, sim, gauge, _):
        gauge.read()
        sim.power_cycle()
        assert gauge.read_pressure_Pa() == pytest.approx(101325.0, rel=1e-6)
        assert gauge.info is not None and gauge.info.first_since_power_on


def test_a_channel_error_bit_or_power_up_mode_is_an_invalid_reading():
    with station(backoff_s=0.0) as (_, _, sim, gauge, _):
        sim.error_flags = 1 << P1
        with pytest.raises(InstrumentProtocolError, match="measuring error on P1"):
            gauge.read_pressure_Pa()
        assert gauge.read_temperature_K() == pytest.approx(298.15, abs=1e-4)  # TOB1 is fine
        sim.error_flags = STAT_POWER_UP
        with pytest.raises(InstrumentProtocolError, match="power-up"):
            gauge.read_temperature_K()
        assert gauge.info is not None and gauge.info.status == 1  # it tried F48 first


def test_a_gauge_at_another_address_hears_nothing():
    with station(address=2, timeout_s=0.05, retries=0) as (_, _, sim, gauge, _):
        with pytest.raises(InstrumentTimeout):
            gauge.read()
        assert sim.requests == 0


def test_a_vanished_port_raises_instrument_gone():
    with pytest.raises(InstrumentGone):
        KellerGauge("/dev/does-not-exist-keller")
    with station() as (_, _, sim, gauge, _):
        gauge.read()
        sim.close()
        with pytest.raises(InstrumentGone):
            gauge.read()
        gauge.close()
        gauge.close()
        with pytest.raises(InstrumentGone):
            gauge.read()
