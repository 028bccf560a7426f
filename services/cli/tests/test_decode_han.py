"""`gxami decode dlms-push` on HAN-port frames and `gxami decode dsmr` on Austrian encrypted P1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gxami_cli.main import app
from gxami_meterlab.simulators.dlms import push_message

runner = CliRunner()
# Kaifa list 1, a real capture (roarfred/AmsToMqttBridge, Samples/Kaifa): HDLC, the 09 0C date-time.
KAIFA = "7EA027010201105A87E6E7000F40000000090C07E1090C0217122AFF80000002010600000528B80C7E"
# EVN / Netz NÖ "Smart Meter Kundenschnittstelle" example, two M-Bus frames, SC 0x20.
EVN_KEY = "36C66639E48A8CA4D6BC8B282A793BBB"
EVN = (
    "68FAFA6853FF000167DB084B464D675000000981F8200000002388D5AB4F97515AAFC6B88D2F85DAA7A0E3C0C40D004535C3"
    "97C9D037AB7DBDA329107615444894A1A0DD7E85F02D496CECD3FF46AF5FB3C9229CFE8F3EE4606AB2E1F409F36AAD2E5090"
    "0A4396FC6C2E083F373233A69616950758BFC7D63A9E9B6E99E21B2CBC2B934772CA51FD4D69830711CAB1F8CFF25F0A3293"
    "37CBA51904F0CAED88D61968743C8454BA922EB00038182C22FE316D16F2A9F544D6F75D51A4E92A1C4EF8AB19A2B7FEAA32"
    "D0726C0ED80229AE6C0F7621A4209251ACE2B2BC66FF0327A653BB686C756BE033C7A281F1D2A7E1FA31C3983E15F8FD16CC"
    "5787E6F517166814146853FF110167419A3CFDA44BE438C96F0E38BF83D98316"
)


def invoke(*args: str, **kwargs: Any) -> Result:
    return runner.invoke(app, list(args), **kwargs)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_han_frames_decode_without_a_profile_in_the_records_shape() -> None:
    llc = KAIFA[18:-6]  # the HDLC frame stripped: E6 E7 00 ...
    for frame in (KAIFA, llc, llc[6:]):
        document = ok_json(invoke("decode", "dlms-push", frame))
        assert document["han_list"] == "kaifa" and "readings" not in document and "body" not in document
        assert document["records"] == [
            {
                "quantity": "1-0:1.7.0",
                "value": 1320,
                "unit": "W",
                "timestamp": "2017-09-12T23:18:42+00:00",
                "source": "1.0.1.7.0.255",
            }
        ]
    full = ok_json(invoke("decode", "dlms-push", KAIFA, "--all-records"))
    assert full["body"] == [1320]
    # The simulator's Kamstrup list (flat OBIS/value pairs), with and without the named profile.
    frame = push_message(3, 1, datetime(2026, 11, 26, 3, 15, tzinfo=UTC), han="kamstrup").hex()
    alone = ok_json(invoke("decode", "dlms-push", frame))
    named = ok_json(invoke("decode", "dlms-push", frame, "--profile", "han-kamstrup"))
    assert alone["meter_id"] == named["meter_id"] == "SIM00300001"
    units = {r["quantity"]: r["unit"] for r in alone["records"]}
    assert units["1-1:1.8.0"] == "Wh" and units["1-1:31.7.0"] == "A"
    assert alone["records"] == named["records"]
    bad = invoke("decode", "dlms-push", frame, "--profile", "no-such")
    assert bad.exit_code == 2 and "no-such" in bad.stderr


def test_decode_dsmr_deciphers_austrian_p1_and_never_shows_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evn.hex"
    path.write_text(EVN + "\n")
    binary = tmp_path / "evn.bin"
    binary.write_bytes(bytes.fromhex(EVN))
    monkeypatch.setenv("EVN_KEY", EVN_KEY)
    document = ok_json(invoke("decode", "dsmr", "--key-env", "EVN_KEY", str(path)))
    assert ok_json(invoke("decode", "dsmr", "--key-env", "EVN_KEY", str(binary))) == document
    assert (document["id"], document["variant"], document["security"]) == ("181220000009", "austria-dlms", "encrypted")
    records = {r["quantity"]: (r["value"], r["unit"]) for r in document["records"]}
    assert records["1-0:1.8.0"] == (12937, "Wh") and records["1-0:32.7.0"] == (233.7, "V")
    monkeypatch.setenv("EVN_KEY", "00" * 16)
    wrong = invoke("decode", "dsmr", "--key-env", "EVN_KEY", str(path))
    assert wrong.exit_code == 2 and "wrong key" in wrong.stderr and wrong.stdout == ""
    assert EVN_KEY.lower() not in (wrong.stderr + wrong.stdout).lower()
    missing = invoke("decode", "dsmr", str(path))
    assert missing.exit_code == 2 and "no key" in missing.stderr
