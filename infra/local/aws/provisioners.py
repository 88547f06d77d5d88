"""How the embedded AWS creates each resource type of the template from its own Properties: DynamoDB tables (SAM's
SimpleTable too), Secrets Manager secrets (GenerateSecretString's rules), SQS queues and their policies, KMS keys,
EventBridge buses and rules (moto matches each event against a rule's pattern and sends it to its SQS targets)."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from infra.local.template_model import PhysicalResource, TemplateError

if TYPE_CHECKING:
    from infra.local.aws.local_aws import LocalAws

TABLE_TYPES: Final = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::Serverless::SimpleTable")
SECRET_TYPE: Final = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type
QUEUE_TYPE: Final = "AWS::SQS::Queue"
KMS_KEY_TYPE: Final = "AWS::KMS::Key"
EVENT_BUS_TYPE: Final = "AWS::Events::EventBus"
EVENT_RULE_TYPE: Final = "AWS::Events::Rule"
QUEUE_POLICY_TYPE: Final = "AWS::SQS::QueuePolicy"


def random_suffix(length: int = 12) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(length))


def generate_password(options: Mapping[str, Any]) -> str:
    """Secrets Manager's GenerateSecretString rules (length, excluded classes/characters), locally."""
    excluded = set(str(options.get("ExcludeCharacters", "")))
    classes = [
        ("ExcludeLowercase", string.ascii_lowercase),
        ("ExcludeUppercase", string.ascii_uppercase),
        ("ExcludeNumbers", string.digits),
        ("ExcludePunctuation", string.punctuation),
    ]
    pools = [[c for c in chars if c not in excluded] for flag, chars in classes if options.get(flag) is not True]
    if options.get("IncludeSpace") is True:
        pools.append([" "])
    pools = [pool for pool in pools if pool]
    if not pools:
        raise TemplateError("GenerateSecretString excludes every character")
    length = int(options.get("PasswordLength", 32))
    alphabet = [c for pool in pools for c in pool]
    while True:
        password = [secrets.choice(alphabet) for _ in range(length)]
        if options.get("RequireEachIncludedType", True) is False or length < len(pools):
            return "".join(password)
        if all(any(c in pool for c in password) for pool in pools):
            return "".join(password)


def _table_request(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": props.get("TableName") or aws.physical_name(logical_id, 255),
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
    }
    billing = props.get("BillingMode", "PROVISIONED")
    request["BillingMode"] = billing

    def throughput(source: Mapping[str, Any]) -> dict[str, int]:
        given = source.get("ProvisionedThroughput") or {}
        return {
            "ReadCapacityUnits": int(given.get("ReadCapacityUnits", 5)),
            "WriteCapacityUnits": int(given.get("WriteCapacityUnits", 5)),
        }

    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = throughput(props)
    indexes = []
    for index in props.get("GlobalSecondaryIndexes") or []:
        item = {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
        if billing == "PROVISIONED":
            item["ProvisionedThroughput"] = throughput(index)
        indexes.append(item)
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    local_indexes = [
        {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
        for index in props.get("LocalSecondaryIndexes") or []
    ]
    if local_indexes:
        request["LocalSecondaryIndexes"] = local_indexes
    stream = props.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    sse = props.get("SSESpecification")
    if sse and sse.get("SSEEnabled"):
        request["SSESpecification"] = {"Enabled": True} | ({"SSEType": sse["SSEType"]} if sse.get("SSEType") else {})
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    if props.get("DeletionProtectionEnabled") is not None:
        request["DeletionProtectionEnabled"] = bool(props["DeletionProtectionEnabled"])
    return request


def _provision_table(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    if aws.template.resources[logical_id]["Type"] == "AWS::Serverless::SimpleTable":
        props = _simple_table_as_table(props)
    request = _table_request(aws, logical_id, props)
    description = aws.dynamodb.create_table(**request)["TableDescription"]
    name = request["TableName"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        aws.dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        aws.dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    attributes = {"Arn": description["TableArn"]}
    if description.get("LatestStreamArn"):
        attributes["StreamArn"] = description["LatestStreamArn"]
    return PhysicalResource(ref=name, attributes=attributes)


def _simple_table_as_table(props: Mapping[str, Any]) -> dict[str, Any]:
    key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
    kind = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
    table: dict[str, Any] = {
        "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": kind}],
        "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
        "BillingMode": "PROVISIONED" if props.get("ProvisionedThroughput") else "PAY_PER_REQUEST",
    }
    for name in ("TableName", "ProvisionedThroughput", "SSESpecification"):
        if name in props:
            table[name] = props[name]
    if props.get("Tags"):
        table["Tags"] = [{"Key": k, "Value": v} for k, v in props["Tags"].items()]
    return table


def _provision_secret(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    name = props.get("Name") or f"{logical_id}-{random_suffix()}"
    request: dict[str, Any] = {"Name": name, "SecretString": aws.secret_value(logical_id, props)}
    if props.get("Description"):
        request["Description"] = props["Description"]
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    arn = aws.secretsmanager.create_secret(**request)["ARN"]
    return PhysicalResource(ref=arn, attributes={"Id": arn})


_QUEUE_ATTRIBUTES: Final = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


def _provision_queue(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    fifo = props.get("FifoQueue") in {True, "true"}
    name = props.get("QueueName") or aws.physical_name(logical_id, 75 if fifo else 80) + (".fifo" if fifo else "")
    attributes: dict[str, str] = {}
    for key in _QUEUE_ATTRIBUTES:
        if key not in props:
            continue
        value = props[key]
        if isinstance(value, dict):
            attributes[key] = json.dumps(value)
        elif isinstance(value, bool):
            attributes[key] = "true" if value else "false"
        else:
            attributes[key] = str(value)
    request: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
    if props.get("Tags"):
        request["tags"] = {tag["Key"]: tag["Value"] for tag in props["Tags"]}
    sqs = aws.client("sqs")
    url = sqs.create_queue(**request)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return PhysicalResource(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})


def _provision_kms_key(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    request: dict[str, Any] = {
        "KeyUsage": props.get("KeyUsage", "ENCRYPT_DECRYPT"),
        "KeySpec": props.get("KeySpec", "SYMMETRIC_DEFAULT"),
    }
    if props.get("Description"):
        request["Description"] = props["Description"]
    if props.get("KeyPolicy"):
        policy = props["KeyPolicy"]
        request["Policy"] = policy if isinstance(policy, str) else json.dumps(policy)
    kms = aws.client("kms")
    metadata = kms.create_key(**request)["KeyMetadata"]
    if props.get("EnableKeyRotation") in {True, "true"}:
        kms.enable_key_rotation(KeyId=metadata["KeyId"])
    return PhysicalResource(ref=metadata["KeyId"], attributes={"Arn": metadata["Arn"], "KeyId": metadata["KeyId"]})


def _provision_event_bus(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    name = props.get("Name") or aws.physical_name(logical_id, 256)
    events = aws.client("events")
    arn = events.create_event_bus(Name=name)["EventBusArn"]
    if props.get("Policy"):
        policy = props["Policy"]
        events.put_permission(EventBusName=name, Policy=policy if isinstance(policy, str) else json.dumps(policy))
    return PhysicalResource(ref=name, attributes={"Arn": arn, "Name": name})


def _provision_event_rule(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    name = props.get("Name") or aws.physical_name(logical_id, 64)
    bus = str(props.get("EventBusName") or "default")
    events = aws.client("events")
    request: dict[str, Any] = {"Name": name, "EventBusName": bus, "State": props.get("State", "ENABLED")}
    for key in ("EventPattern", "ScheduleExpression", "Description"):
        if key in props:
            value = props[key]
            request[key] = json.dumps(value) if isinstance(value, dict) else str(value)
    arn = events.put_rule(**request)["RuleArn"]
    targets = [
        {key: target[key] for key in ("Id", "Arn", "Input", "RetryPolicy", "DeadLetterConfig") if key in target}
        for target in props.get("Targets") or []
    ]
    if targets:
        events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
    return PhysicalResource(ref=f"{bus}|{name}", attributes={"Arn": arn})


def _provision_queue_policy(aws: LocalAws, logical_id: str, props: Mapping[str, Any]) -> PhysicalResource:
    policy = props["PolicyDocument"]
    sqs = aws.client("sqs")
    for url in props.get("Queues") or []:
        sqs.set_queue_attributes(
            QueueUrl=str(url), Attributes={"Policy": policy if isinstance(policy, str) else json.dumps(policy)}
        )
    return PhysicalResource(ref=f"{aws.stack_name}-{logical_id}", attributes={})


type Provisioner = Callable[[LocalAws, str, Mapping[str, Any]], PhysicalResource]
PROVISIONERS: Final[Mapping[str, Provisioner]] = {
    **dict.fromkeys(TABLE_TYPES, _provision_table),
    SECRET_TYPE: _provision_secret,
    QUEUE_TYPE: _provision_queue,
    KMS_KEY_TYPE: _provision_kms_key,
    EVENT_BUS_TYPE: _provision_event_bus,
    EVENT_RULE_TYPE: _provision_event_rule,
    QUEUE_POLICY_TYPE: _provision_queue_policy,
}
