"""Token secrets under the stack's key, on the embedded AWS: created with it and tagged, and still read and written
by the broker (moto keeps the key id; who may use the key is tests/unit/test_token_access.py's question)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.broker import Broker

ADA = 4583173393803140


def test_a_new_connections_secret_is_made_under_the_token_key_and_tagged(broker: Broker) -> None:
    location, nonce = broker.start()
    assert broker.callback(broker.consent(location, user_id=ADA), nonce).status == 200

    secret = broker.secrets.describe_secret(SecretId=f"test-stack/connections/{ADA}")

    assert secret["KmsKeyId"] == broker.env["TOKEN_KMS_KEY_ID"]
    assert {tag["Key"]: tag["Value"] for tag in secret["Tags"]} == {
        "smartsheet-oauth-broker:secret-prefix": "test-stack/connections/",
        "smartsheet-oauth-broker:connection-id": str(ADA),
    }


def test_the_sweep_refreshes_a_secret_under_the_token_key(broker: Broker) -> None:
    location, nonce = broker.start()
    assert broker.callback(broker.consent(location, user_id=ADA), nonce).status == 200
    broker.make_due(ADA)

    report = broker.sweep()

    assert report["outcomes"]["refreshed"] == 1, report
    versions = broker.secrets.list_secret_version_ids(SecretId=f"test-stack/connections/{ADA}")["Versions"]
    assert len(versions) == 2
    assert (
        broker.secrets.describe_secret(SecretId=f"test-stack/connections/{ADA}")["KmsKeyId"]
        == (broker.env["TOKEN_KMS_KEY_ID"])
    )
