"""TokenStore=dynamodb through the real handlers: pairs sealed in the token table, bound to their connection,
generation and version; idempotent writes as Secrets Manager's; a bounded data-key cache; disconnects retire the pair;
a stack whose store changed keeps serving connections still in the other one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.tokens import TokenSet
from smartsheet_oauth.platform import aws
from smartsheet_oauth.stores import token_vault
from smartsheet_oauth.stores.token_table import REF_SCHEME, TokenTable

from tests.integration.test_refresh import ADA, GRACE, signed_in_and_due
from tests.support.broker import Broker

pytestmark = pytest.mark.parametrize("broker", ["dynamodb"], indirect=True)


def _item(broker: Broker, connection_id: int) -> dict[str, Any]:
    item = broker.dynamodb.get_item(
        TableName=broker.env["TOKEN_TABLE_NAME"], Key={"connection_id": {"S": str(connection_id)}}, ConsistentRead=True
    ).get("Item")
    assert item is not None
    return item


def _table() -> TokenTable:
    table = services.token_vault().table
    assert table is not None
    return table


def test_a_sign_in_stores_the_pair_sealed_in_the_token_table_and_no_secret(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200

    record = broker.connection(ADA)
    assert record is not None
    assert record["secret_arn"] == f"{REF_SCHEME}{ADA}"
    item = _item(broker, ADA)
    stored = broker.tokens(ADA)
    sealed = bytes(item["sealed_pair"]["B"])
    # Sealed: neither token appears in what DynamoDB holds.
    assert stored["access_token"].encode() not in sealed
    assert stored["refresh_token"].encode() not in sealed
    assert broker.emulator.refresh_token_is_live(stored["refresh_token"])
    names = [secret["Name"] for secret in broker.secrets.list_secrets()["SecretList"]]
    assert not [name for name in names if name.startswith(broker.env["TOKEN_SECRET_PREFIX"])]


def test_the_refresh_rotates_the_pair_in_the_table_and_keeps_the_previous_one(broker: Broker) -> None:
    signed_in_and_due(broker, ADA)
    first = broker.tokens(ADA)

    broker.sweep()

    now = broker.tokens(ADA)
    assert now["refresh_token"] != first["refresh_token"]
    assert broker.emulator.refresh_token_is_live(now["refresh_token"])
    assert broker.tokens(ADA, "AWSPREVIOUS") == first
    record = broker.connection(ADA)
    assert record is not None
    assert record["generation"] == 2
    assert int(_item(broker, ADA)["pair_generation"]["N"]) == 1  # the generation the new pair was obtained under


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("pair_version", {"S": "another-version"}), ("pair_generation", {"N": "7"})],
)
def test_a_pair_whose_version_or_generation_was_changed_does_not_open(
    broker: Broker, attribute: str, value: dict[str, str]
) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    broker.dynamodb.update_item(
        TableName=broker.env["TOKEN_TABLE_NAME"],
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="SET #a = :v",
        ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":v": value},
    )

    with pytest.raises(StorageError) as raised:
        _table().load(f"{REF_SCHEME}{ADA}")
    assert raised.value.code == "InvalidTag"


def test_a_pair_copied_to_another_connection_does_not_open(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    assert broker.sign_in(user_id=GRACE).status == 200
    ada = _item(broker, ADA)
    broker.dynamodb.put_item(TableName=broker.env["TOKEN_TABLE_NAME"], Item=ada | {"connection_id": {"S": str(GRACE)}})

    with pytest.raises(StorageError) as raised:
        _table().load(f"{REF_SCHEME}{GRACE}")
    assert raised.value.code == "InvalidTag"


def test_a_repeated_or_superseded_version_changes_nothing(broker: Broker) -> None:
    """As Secrets Manager's ClientRequestToken: a late retry of a pair already stored, or already replaced, is a
    no-op, so an older pair never comes back over a newer one."""
    assert broker.sign_in(user_id=ADA).status == 200
    table, ref = _table(), f"{REF_SCHEME}{ADA}"
    first = TokenSet.from_json(json.dumps(broker.tokens(ADA)))
    second = first.__class__.from_json(json.dumps(broker.tokens(ADA) | {"refresh_token": "second"}))
    third = first.__class__.from_json(json.dumps(broker.tokens(ADA) | {"refresh_token": "third"}))
    table.save(str(ADA), second, version_id="v2", generation=1)
    table.save(str(ADA), third, version_id="v3", generation=2)

    table.save(str(ADA), third, version_id="v3", generation=2)  # a repeat of the current version
    table.save(str(ADA), second, version_id="v2", generation=1)  # a late retry of the superseded one

    assert table.load(ref).refresh_token == "third"
    assert table.load_previous(ref).refresh_token == "second"


def test_reading_many_pairs_costs_one_kms_call_per_data_key(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    for user in (ADA, GRACE):
        assert broker.sign_in(user_id=user).status == 200
    calls: list[str] = []
    kms = aws.kms()
    kms.meta.events.register("before-call.kms.*", lambda model, **_: calls.append(model.name))
    reader = TokenTable(broker.dynamodb, broker.env["TOKEN_TABLE_NAME"], kms=lambda: kms, key_id=_key(broker))

    for _ in range(3):
        for user in (ADA, GRACE):
            reader.load(f"{REF_SCHEME}{user}")

    # One Decrypt for the data key both pairs were sealed under (one callback container sealed both), one
    # GenerateDataKey made ready for a save: not one call per read.
    assert calls.count("Decrypt") == 1
    assert calls.count("GenerateDataKey") == 1


def test_the_opened_data_key_cache_is_bounded(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_vault, "OPENED_KEYS_MAX", 2)
    kms = aws.kms()
    sealer = token_vault.PairSealer(lambda: kms, _key(broker), context={"purpose": "token-pair"})
    sealed = []
    for n in range(4):
        sealer._data_key = None  # a new data key for each pair
        sealed.append(sealer.seal(_pair(n), binding=f"b{n}"))

    assert len(sealer._opened) == 2  # four data keys made, two kept
    calls: list[str] = []
    kms.meta.events.register("before-call.kms.Decrypt", lambda model, **_: calls.append(model.name))
    assert sealer.open(sealed[3], binding="b3").refresh_token == "r3"  # kept: no KMS call
    assert sealer.open(sealed[0], binding="b0").refresh_token == "r0"  # forgotten: KMS opens its key again
    assert calls == ["Decrypt"]
    assert len(sealer._opened) == 2


def test_a_disconnect_retires_the_pair_and_a_new_sign_in_brings_it_back(broker: Broker) -> None:
    from tests.management.conftest import call_management

    assert broker.sign_in(user_id=ADA).status == 200
    answer = call_management("DELETE", f"/connections/{ADA}")
    assert answer.status == 200, answer

    with pytest.raises(StorageError) as raised:
        _table().load(f"{REF_SCHEME}{ADA}")
    assert raised.value.code == "InvalidRequestException"
    assert "expires_at" in _item(broker, ADA)  # the table's TTL deletes it after the recovery window

    assert broker.sign_in(user_id=ADA).status == 200
    assert broker.emulator.refresh_token_is_live(broker.tokens(ADA)["refresh_token"])
    assert "expires_at" not in _item(broker, ADA)


def test_a_connection_still_in_secrets_manager_is_refreshed_there(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack switched to the dynamodb store serves the connections not migrated yet where their records say."""
    monkeypatch.setenv("TOKEN_STORE", "secretsmanager")
    services.reset()
    signed_in_and_due(broker, ADA)
    monkeypatch.setenv("TOKEN_STORE", "dynamodb")
    services.reset()

    broker.sweep()

    record = broker.connection(ADA)
    assert record is not None
    assert ":secretsmanager:" in str(record["secret_arn"])
    assert record["generation"] == 2
    assert broker.emulator.refresh_token_is_live(broker.tokens(ADA)["refresh_token"])


def _key(broker: Broker) -> str:
    return broker.env["TOKEN_KMS_KEY_ID"]


def _pair(n: int) -> TokenSet:
    return TokenSet(
        access_token=f"a{n}",
        refresh_token=f"r{n}",
        token_type="bearer",
        expires_at=2_000_000_000,
        scope="READ_SHEETS",
        region="us",
        user_id=str(n),
        email="",
        obtained_at=0,
    )
