"""Finding the recipient: params, then the contacts file, then the customer key."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams import ConfigError
from streams.senders import Contact, ContactBook
from tests.streams.channels.builders import make_action


def test_params_win_then_the_file_fills_the_gaps() -> None:
    book = ContactBook(
        {"aino": Contact(email="file@example.com", first_name="Aino", phone="+358401110001")}
    )
    action = make_action(params={"email": "params@example.com"})
    assert book.lookup(action) == Contact(
        email="params@example.com", first_name="Aino", phone="+358401110001"
    )


def test_a_customer_known_by_address_alone_is_reachable_there() -> None:
    book = ContactBook()
    assert book.lookup(make_action(customer_id="email:aino@example.com")).email == (
        "aino@example.com"
    )
    assert book.lookup(make_action(customer_id="phone:+358401110001")).phone == "+358401110001"
    assert book.lookup(make_action(customer_id="loyalty_card:123")) == Contact()


def test_a_malformed_address_in_params_is_ignored_not_used() -> None:
    book = ContactBook({"aino": Contact(email="file@example.com")})
    assert book.lookup(make_action(params={"email": "not-an-address"})).email == "file@example.com"


def test_the_contacts_file_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "contacts.json"
    good.write_bytes(orjson.dumps({"aino": {"email": "aino@example.com", "first_name": "Aino"}}))
    assert ContactBook.from_file(good).lookup(make_action()).first_name == "Aino"

    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"aino": {"email": "aino@example.com", "nickname": "A"}}))
    with pytest.raises(ConfigError, match=r"aino\.nickname: Extra inputs are not permitted"):
        ContactBook.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        ContactBook.from_file(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        ContactBook.from_file(tmp_path / "broken.json")
