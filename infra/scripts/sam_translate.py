"""template.yaml after the AWS::Serverless transform: the CloudFormation that IAM checks and linters judge."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import to_py27_compatible_template, undo_mark_unicode_str_in_template
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
DEFAULT_OUTPUT = ROOT / ".aws-sam" / "translated" / "template.json"

# What the transform needs to know about the deploying account; none of it ends up in an ARN we check.
PSEUDO_PARAMETERS: Mapping[str, str] = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "smartsheet-oauth-broker",
    "AWS::URLSuffix": "amazonaws.com",
}

# Stand-in values for parameters without a default, so the transform can run without a deploy.
PLACEHOLDERS: Mapping[str, str] = {"SmartsheetClientId": "placeholder-client-id"}


def _no_managed_policies() -> dict[str, str]:
    # The transform asks IAM for managed policy ARNs only when a policy is given by name; the template names
    # none, so the transform never needs AWS (and fails if someone adds a named managed policy).
    return {}


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    document: dict[str, Any] = yaml_parse(path.read_text(encoding="utf-8"))
    return document


def translate(
    path: Path = TEMPLATE, parameters: Mapping[str, str] | None = None, *, passthrough_metadata: bool = True
) -> dict[str, Any]:
    """The translated template; `parameters` override the template's defaults (and PLACEHOLDERS)."""
    document = load_template(path)
    values: dict[str, Any] = dict(PSEUDO_PARAMETERS)
    for name, spec in (document.get("Parameters") or {}).items():
        if "Default" in spec:
            values[name] = spec["Default"]
    values.update(PLACEHOLDERS)
    values.update(parameters or {})
    document = _as_packaged(copy.deepcopy(document))
    to_py27_compatible_template(document, values)
    # A session object only carries the region here: the transform makes no AWS call.
    session = boto3.session.Session(region_name=values["AWS::Region"])
    translator = Translator({}, Parser(), boto_session=session)
    translated = translator.translate(
        document, values, passthrough_metadata=passthrough_metadata, get_managed_policy_map=_no_managed_policies
    )
    result: dict[str, Any] = undo_mark_unicode_str_in_template(translated)
    return result


def _as_packaged(document: dict[str, Any]) -> dict[str, Any]:
    """Point local CodeUri folders at S3, as `sam package` does before CloudFormation sees the template."""
    holders = [(document.get("Globals") or {}).get("Function") or {}]
    holders += [
        resource.setdefault("Properties", {})
        for resource in (document.get("Resources") or {}).values()
        if resource.get("Type") == "AWS::Serverless::Function"
    ]
    for properties in holders:
        code_uri = properties.get("CodeUri")
        if isinstance(code_uri, str) and not code_uri.startswith("s3://"):
            properties["CodeUri"] = f"s3://packaged-artifacts/{code_uri.strip('/') or 'code'}.zip"
    return document


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("template", nargs="?", type=Path, default=TEMPLATE)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    translated = translate(args.template)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(translated, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"translated {args.template} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
