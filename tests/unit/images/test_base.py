"""The Debian mirror debootstrap uses is the one this machine's apt uses (tests/images/base.py)."""

from __future__ import annotations

from tests.images.base import debian_mirror, debootstrap_args

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_sources() -> None:
    assert debian_mirror([DEB822]) == "http://mirror.example/debian"


def test_security_and_other_suites_are_not_the_mirror() -> None:
    security_only = DEB822.split("\n\n", 1)[1]
    assert debian_mirror([security_only]) is None
    assert debian_mirror(["deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main"]) is None


def test_one_line_sources_with_options() -> None:
    line = "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://ftp.example/debian bookworm main contrib\n"
    assert debian_mirror(["# deb http://old.example/debian bookworm main\n" + line]) == "http://ftp.example/debian"
    assert debian_mirror(["deb-src http://src.example/debian bookworm main"]) is None


def test_the_first_file_that_names_a_mirror_wins() -> None:
    assert debian_mirror(["", "deb http://a.example/debian bookworm main", DEB822]) == "http://a.example/debian"


def test_debootstrap_command() -> None:
    args = debootstrap_args("http://m/debian", "/target")
    assert args[:3] == ["debootstrap", "--variant=minbase",
                        "--include=python3,python3-venv,python-is-python3,ca-certificates"]
    assert args[-3:] == ["bookworm", "/target", "http://m/debian"]
    assert any(a.startswith("--cache-dir=/") for a in args)  # absolute, as debootstrap requires
