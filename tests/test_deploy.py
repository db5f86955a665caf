"""deploy/: the SAM template is valid CloudFormation with least-privilege IAM, and the layer
builds and imports on its own (without this machine's site-packages)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_template_is_valid() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    r = subprocess.run([str(cfn_lint), str(DEPLOY / "template.yaml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_template_uses_the_example_files_and_least_privilege() -> None:
    text = (DEPLOY / "template.yaml").read_text()
    for handler in re.findall(r"Handler: (\w+)\.handler", text):
        assert (DEPLOY / "functions" / f"{handler}.py").is_file(), handler
    # Exactly the Athena calls the origin makes, on one workgroup: no athena:*.
    allowed = text.replace('Principal: "*"', "")  # the bucket policy's deny of plain HTTP
    assert "athena:*" not in text and '"*"' not in allowed and "Resource: '*'" not in text
    for action in ("StartQueryExecution", "GetQueryExecution", "GetQueryResults",
                   "StopQueryExecution"):
        assert f"athena:{action}" in text
    assert ":workgroup/${Workgroup}" in text


@pytest.mark.slow
def test_layer_builds_and_imports_alone(tmp_path: Path) -> None:
    env = {**os.environ, "PIP": f"{sys.executable} -m pip", "LAYER_DIR": str(tmp_path / "layer")}
    r = subprocess.run(["bash", str(DEPLOY / "build_layer.sh"), "--local"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    layer = tmp_path / "layer" / "python"  # not in the checkout
    assert (layer / "athena_warm" / "adapters" / "redis.py").is_file()
    assert not (layer / "boto3").exists()  # the runtime provides it
    # What the Lambda Python runtime adds: boto3, botocore, s3transfer (and nothing else).
    import boto3
    import botocore
    import s3transfer

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for mod in (boto3, botocore, s3transfer):
        (runtime / mod.__name__).symlink_to(Path(mod.__file__).parent)
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
        "import athena_warm, athena_warm.middleware, athena_warm.adapters.redis, "
        "athena_warm._codec, msgpack, zstandard, redis, aws_lambda_powertools; "
        "import athena_warm.examples.customer_lookup as app; print(app.handler.__name__)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ATHENA_WARM_", "PYTHON"))}
    r = subprocess.run([sys.executable, "-S", "-c", code, str(layer), str(runtime)],
                       capture_output=True,
                       text=True, env={**clean, "ATHENA_WARM_PREWARM": "false",
                                       "POWERTOOLS_TRACE_DISABLED": "true"})
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_auto_invalidation_function_is_off_by_default_and_least_privilege() -> None:
    from cfnlint.decode import decode

    template, problems = decode(str(DEPLOY / "template.yaml"))
    assert not problems and template is not None
    params, res = template["Parameters"], template["Resources"]
    assert params["AutoInvalidate"]["Default"] == "false"
    fn = res["AutoInvalidateFunction"]
    assert fn["Condition"] == "AutoInvalidateOn"
    props = fn["Properties"]
    assert props["Handler"] == "athena_warm.autoinvalidate.handler"
    pattern = props["Events"]["TableChanged"]["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.glue"]
    assert pattern["detail-type"] == ["Glue Data Catalog Table State Change"]
    assert set(pattern["detail"]) == {"databaseName", "tableName"}  # only this table's events
    # the same role as the function that reads the mapping: nothing more
    assert props["Role"] == res["CustomerLookupFunction"]["Properties"]["Role"] == {
        "Fn::GetAtt": ["MappingReaderRole", "Arn"]}
    doc = res["MappingReaderPolicy"]["Properties"]["PolicyDocument"]
    assert doc["Version"] == "2012-10-17"
    actions = {a for s in doc["Statement"] for a in (
        s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert "glue:GetTable" in actions and "s3:ListBucket" in actions  # the validators
    assert not any(a.endswith("*") for a in actions)


def test_the_s3_shared_tier_is_private_and_least_privilege() -> None:
    from cfnlint.decode import decode

    template, problems = decode(str(DEPLOY / "template.yaml"))
    assert not problems and template is not None
    res = template["Resources"]
    bucket = res["SharedTierBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]
    deny = res["SharedTierBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}}
    doc = res["SharedTierPolicy"]["Properties"]["PolicyDocument"]
    assert doc["Version"] == "2012-10-17"
    rw, listing = doc["Statement"]
    assert rw["Action"] == ["s3:GetObject", "s3:PutObject"]  # no DeleteObject: never used
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "athena-warm/*"}}
    for fn in ("CustomerLookupFunction", "AutoInvalidateFunction"):
        props = res[fn]["Properties"]
        assert "ATHENA_WARM_S3_URL" in props["Environment"]["Variables"]
    arns = res["MappingReaderRole"]["Properties"]["ManagedPolicyArns"]
    assert {"Fn::If": ["S3TierOn", {"Ref": "SharedTierPolicy"}, {"Ref": "AWS::NoValue"}]} in arns


def translated(template: dict[str, Any], tmp_path: Path, name: str) -> Path:
    """The template as CloudFormation: SAM's own translator (code URIs as `sam package` makes
    them), written as JSON for cfn-lint."""
    import json

    from samtranslator.translator.transform import transform

    doc = json.loads(json.dumps(template, default=str))
    for resource in doc["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://packaged/{props[key].strip('/')}.zip"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    out = transform(doc, {"ResultsBucket": "results", "DataBucket": "data"},
                    NoManagedPolicies())
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(out, default=str, indent=1))
    return path


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    return subprocess.run([str(cfn_lint), "--", str(path)], capture_output=True, text=True)


def test_the_translated_template_lints_clean_and_catches_iam_typos(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cfn-lint on the SAM template misses a typo in an IAM action; on SAM's translation it
    does not. So the translation is linted too, and a planted typo proves it."""
    from cfnlint.decode import decode

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the translator's pseudo-parameters
    template, problems = decode(str(DEPLOY / "template.yaml"))
    assert not problems and template is not None
    r = lint(translated(template, tmp_path, "stack"))
    assert r.returncode == 0, r.stdout + r.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text((DEPLOY / "template.yaml").read_text().replace(
        "athena:GetQueryResults", "athena:GetQueryResult"))
    assert lint(typo).returncode == 0  # the SAM template's lint does not see it
    planted, problems = decode(str(typo))
    assert planted is not None
    r = lint(translated(planted, tmp_path, "typo"))
    assert r.returncode != 0 and "getqueryresult" in r.stdout, r.stdout


def test_logs_are_kept_for_a_while_and_the_counter_carries_nothing_it_does_not_use() -> None:
    from cfnlint.decode import decode

    template, problems = decode(str(DEPLOY / "template.yaml"))
    assert not problems and template is not None
    params, res = template["Parameters"], template["Resources"]
    assert params["LogRetentionDays"]["Default"] == 30
    for fn, group in (("CustomerLookupFunction", "CustomerLookupLogGroup"),
                      ("CounterFunction", "CounterLogGroup"),
                      ("AutoInvalidateFunction", "AutoInvalidateLogGroup")):
        assert res[fn]["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": group}}
        assert res[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    glob = template["Globals"]["Function"]
    assert glob["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert "Layers" not in glob and "Tracing" not in glob
    counter = res["CounterFunction"]["Properties"]
    assert "Layers" not in counter and "Tracing" not in counter  # plain Python, no X-Ray
    assert (DEPLOY / "functions" / "counter.py").read_text().count("import athena_warm") == 0
    reader = res["MappingReaderPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    listing = [st for st in reader if st["Action"] == "s3:ListBucket"]
    assert len(listing) == 2 and all("s3:prefix" in st["Condition"]["StringLike"]
                                     for st in listing)


def test_network_interface_permissions_only_in_a_vpc(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """AWSLambdaVPCAccessExecutionRole (ENI permissions on *) only when SubnetIds are given:
    SAM attaches it whenever a function has VpcConfig, even one that resolves to nothing."""
    import json

    from cfnlint.decode import decode

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    template, _ = decode(str(DEPLOY / "template.yaml"))
    assert template is not None
    out = json.loads(translated(template, tmp_path, "roles").read_text())
    for name, resource in out["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for arn in resource["Properties"].get("ManagedPolicyArns", []):
            if "AWSLambdaVPCAccessExecutionRole" in json.dumps(arn):
                assert isinstance(arn, dict) and arn["Fn::If"][0] == "InVpc", (name, arn)
