"""SSH key parsing and fingerprints (checked against ssh-keygen), durations and sizes."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from bastion.identity.keys import InvalidKey, is_fingerprint, parse_key_parts, parse_public_key
from bastion.units import format_duration, parse_duration, parse_size
from tests.configs import ssh_keypair


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa"])
def test_fingerprint_matches_ssh_keygen(tmp_path: Path, key_type: str) -> None:
    path = tmp_path / key_type
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)], check=True)
    line = Path(f"{path}.pub").read_text()
    printed = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True, text=True).stdout
    key = parse_public_key(line)
    assert key.fingerprint == printed.split()[1]
    assert is_fingerprint(key.fingerprint)


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    good = parse_public_key(ssh_keypair(tmp_path / "k"))
    with pytest.raises(InvalidKey, match="unsupported key type"):
        parse_key_parts("ssh-dss", good.base64)
    with pytest.raises(InvalidKey, match="does not hold a ssh-rsa key"):
        parse_key_parts("ssh-rsa", good.base64)  # type confusion: an ed25519 blob declared as RSA
    with pytest.raises(InvalidKey, match="base64"):
        parse_key_parts("ssh-ed25519", "AAAA$$")
    with pytest.raises(InvalidKey, match="too short"):
        parse_key_parts("ssh-ed25519", base64.b64encode(b"ab").decode())
    with pytest.raises(InvalidKey):
        parse_public_key("ssh-ed25519")
    truncated = base64.b64encode(b"\x00\x00\x10\x00ssh-ed25519").decode()
    with pytest.raises(InvalidKey):
        parse_key_parts("ssh-ed25519", truncated)


def test_fingerprint_shape() -> None:
    assert not is_fingerprint("SHA256:short")
    assert not is_fingerprint("MD5:" + "a" * 46)
    assert not is_fingerprint("SHA256:" + "!" * 43)


def test_durations_and_sizes() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration(" 7d ") == 7 * 86400
    assert parse_duration(15) == 15
    for bad in ("soon", "", "5x", "-5s", True, -1):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]
    assert parse_size("1GiB") == 1024**3
    assert parse_size("2GB") == 2 * 1000**3
    assert parse_size(512) == 512
    for bad in ("lots", "-1MB", True):
        with pytest.raises(ValueError):
            parse_size(bad)  # type: ignore[arg-type]
    assert format_duration(3725) == "1h2m5s"
    assert format_duration(0) == "0s"
