"""Every benchmark by name, in the order a full run takes them (fast, CPU-only ones first)."""

from __future__ import annotations

from bench import ciphering, cli_start, decoding, dlms_frames, ingest, pushes, reports, sessions, storage
from bench.figures import Benchmark

_ALL = (
    Benchmark(
        "cli_start_help",
        '`gxami --help` start-up, median wall time vs `python -c "import typer"`',
        cli_start.run_help,
    ),
    Benchmark(
        "cli_start_decode_mbus",
        '`gxami decode mbus HEX` start-up, median wall time vs `python -c "import typer"`',
        cli_start.run_decode,
    ),
    Benchmark(
        "decode_mbus",
        "M-Bus RSP_UD long frames decoded/s vs a bare checksum + record walker",
        decoding.run_case("decode_mbus"),
    ),
    Benchmark(
        "decode_wmbus",
        "wM-Bus plain telegrams (CRCs in) decoded/s vs a bare CRC + record walker",
        decoding.run_case("decode_wmbus"),
    ),
    Benchmark(
        "decode_wmbus_mode5",
        "wM-Bus mode-5 encrypted telegrams decoded/s vs a bare CRC + AES-CBC + walker",
        decoding.run_case("decode_wmbus_mode5"),
    ),
    Benchmark(
        "decode_dsmr", "DSMR 5.0 telegrams decoded/s vs a bare CRC16 + line walker", decoding.run_case("decode_dsmr")
    ),
    Benchmark(
        "decode_iec62056_21",
        "IEC 62056-21 readouts decoded/s vs a bare BCC + data-set walker",
        decoding.run_case("decode_iec62056_21"),
    ),
    Benchmark(
        "decode_modbus",
        "Modbus register blocks decoded/s vs precompiled struct unpacking",
        decoding.run_case("decode_modbus"),
    ),
    Benchmark(
        "decode_dlms_register",
        "DLMS GET-responses through our exchange vs gurux getData+updateValue",
        dlms_frames.run_register,
    ),
    Benchmark(
        "decode_dlms_profile",
        "DLMS one-day load-profile replies (3 blocks) through our exchange vs gurux",
        dlms_frames.run_profile,
    ),
    Benchmark(
        "dlms_decrypt", "ciphered DLMS APDUs decrypted/s: gxcore and gurux vs cryptography AES-GCM", ciphering.run
    ),
    Benchmark(
        "dlms_pushes_listener",
        "ciphered DLMS pushes accepted and published/s by the real listener (one core) vs decoding them in memory",
        pushes.run,
    ),
    Benchmark(
        "ingest_kafka_to_rows",
        "readings/s Kafka -> committed rows (one ingest process) vs binary COPY",
        ingest.run,
        needs_stack=True,
    ),
    Benchmark(
        "ingest_merge_growth",
        "merge rate at 5M rows vs at 1M (--full: 50M); the issue allows a 30% fall",
        storage.run_merge_growth,
        needs_stack=True,
    ),
    Benchmark(
        "storage_compression",
        "TimescaleDB bytes per reading compressed vs uncompressed (skipped without it)",
        storage.run_compression,
        needs_stack=True,
    ),
    Benchmark(
        "reports_api_month",
        "reports API latency, one month of a 10,000-meter tree, vs the same SQL run bare",
        reports.run,
        needs_stack=True,
    ),
    Benchmark(
        "dlms_sessions_tcp",
        "DLMS read sessions/s, 50 simulated meters over TCP, vs the simulator's ceiling",
        sessions.run,
    ),
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in _ALL}
