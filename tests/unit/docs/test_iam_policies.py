# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The least-privilege IAM policies of docs/iam/ against the code that needs them (no network).

1. Every policy file is a valid IAM policy document: Version 2012-10-17, every statement with
   Effect/Action/Resource, no wildcard in an action, every ``${Placeholder}`` documented in docs/setup.md.
2. The DB-host policy never deletes (retention runs from the control node).
3. Every boto3 client call in ``plugins/module_utils`` (and ``plugins/modules``) is found by AST, mapped to its
   IAM actions with :data:`METHOD_ACTIONS`, and must be allowed by the policy of every place that runs it:
   the code reachable from each entry point (:data:`ENTRY_POINTS`: a module or a host agent, and where it runs)
   is followed through the imports, function by function (a reached function also reaches its file's
   module-level code: conservative, it can only ask for more permissions, never fewer). A boto3 method
   missing from :data:`METHOD_ACTIONS`
   fails with a message saying to add it, so a new AWS call cannot slip past the policies; so does a module
   that reaches boto3 but is missing from :data:`ENTRY_POINTS`.
4. :data:`ENTRY_POINTS` is checked against the playbooks and roles: a task running an rtx.dr module on the
   control node (``delegate_to: localhost`` or a ``hosts: localhost`` play) or on a managed host must be
   declared there.

The table "which code runs where" is documented in docs/setup.md (IAM section); keep both in step.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
IAM_DIR = ROOT / "docs" / "iam"
SETUP_DOC = ROOT / "docs" / "setup.md"
MODULE_UTILS = ROOT / "plugins" / "module_utils"
MODULES = ROOT / "plugins" / "modules"
PKG = "ansible_collections.rtx.dr.plugins.module_utils"

HOST_POLICY = "backup-host-policy.json"
CONTROL_POLICY = "control-node-policy.json"
#: Where code runs -> the policy of the principal there.
POLICY_OF = {"host": HOST_POLICY, "control": CONTROL_POLICY}

# ---------------------------------------------------------------------------------------------------------------
# boto3 client method -> IAM actions. Add a row for every new client method the code calls.
# (S3 evaluates CopyObject as s3:GetObject on the source and s3:PutObject on the destination; every multipart
# step is s3:PutObject; HeadObject is s3:GetObject; HeadBucket and ListObjectsV2 are s3:ListBucket.)
# ---------------------------------------------------------------------------------------------------------------
METHOD_ACTIONS = {
    # S3
    "head_bucket": ["s3:ListBucket"],
    "list_objects_v2": ["s3:ListBucket"],
    "get_bucket_encryption": ["s3:GetEncryptionConfiguration"],
    "list_multipart_uploads": ["s3:ListBucketMultipartUploads"],
    "get_object": ["s3:GetObject"],
    "head_object": ["s3:GetObject"],
    "put_object": ["s3:PutObject"],
    "create_multipart_upload": ["s3:PutObject"],
    "upload_part": ["s3:PutObject"],
    "complete_multipart_upload": ["s3:PutObject"],
    "abort_multipart_upload": ["s3:AbortMultipartUpload"],
    # (CopyObject copies the source's tags: s3:GetObjectTagging on the source, s3:PutObjectTagging on the copy)
    "copy_object": ["s3:GetObject", "s3:PutObject", "s3:GetObjectTagging", "s3:PutObjectTagging"],
    "get_object_tagging": ["s3:GetObjectTagging"],
    "put_object_tagging": ["s3:PutObjectTagging"],
    # boto3's managed transfer (multipart copy over 4 GiB): HeadObject, CreateMultipartUpload, UploadPartCopy,
    # CompleteMultipartUpload, AbortMultipartUpload when a part fails.
    "copy": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
    "delete_object": ["s3:DeleteObject"],
    "delete_objects": ["s3:DeleteObject"],
    # KMS
    "describe_key": ["kms:DescribeKey"],
    # Route53 / SNS (today only through amazon.aws / community.aws modules; here for the day module_utils calls them)
    "change_resource_record_sets": ["route53:ChangeResourceRecordSets"],
    "get_change": ["route53:GetChange"],
    "list_resource_record_sets": ["route53:ListResourceRecordSets"],
    "list_hosted_zones": ["route53:ListHostedZones"],
    "publish": ["sns:Publish"],
}

#: SSE-KMS: what S3 asks KMS for on the caller's behalf (a multipart upload needs Decrypt too).
IMPLIED_KMS = {
    "s3:PutObject": ["kms:GenerateDataKey", "kms:Decrypt"],
    "s3:GetObject": ["kms:Decrypt"],
}

#: Client methods that send no request (no permission needed).
NO_REQUEST_METHODS = frozenset(("close", "can_paginate", "generate_presigned_url"))

#: (file, call) pairs the code makes but a policy deliberately does NOT allow, with the reason.
#: Keys: (file name, method, where).
DELIBERATELY_DENIED = {
    ("backup.py", "delete_object", "host"):
        "best-effort cleanup of a failed backup's completed objects (errors ignored); the DB hosts never delete, "
        "the failed record lists no objects and the lifecycle rules expire what is left",
}

#: Entry points and where they run. Modules: the playbooks say (checked by test_entry_points_match_playbooks);
#: host agents: role rtx.dr.backup_schedule (archive_command/restore_command, systemd timers).
ENTRY_POINTS = {
    "plugins/modules/pg_basebackup.py": {"host"},          # backup_full.yml on the current primary
    "plugins/modules/backup_restore.py": {"host"},         # restore.yml on restore_host
    "plugins/modules/wal_archive_status.py": {"host", "control"},  # backup_incremental.yml / region_failover.yml
    "plugins/modules/s3_backup_verify.py": {"control"},    # verify_backups.yml, backup_full.yml (delegate_to)
    "plugins/modules/backup_retention.py": {"control"},    # backup_retention.yml
    "plugins/modules/backup_replicate.py": {"control"},    # backup_full.yml, backup_incremental.yml (delegate_to)
    "plugins/module_utils/wal_agent.py": {"host"},         # archive_command (push) / restore_command (fetch)
    "plugins/module_utils/health_agent.py": {"host"},      # rtx-dr-health timer: the WAL stream (read only)
    "plugins/module_utils/agent.py": {"host"},             # rtx-dr-backup / rtx-dr-verify timers
    "plugins/module_utils/fence_guard.py": {"host"},       # ExecStartPre of PostgreSQL, leader record after promotion
}

#: Calls that look like boto3 operations but are not on a boto3 client: (file, receiver, method) -> reason.
NOT_CLIENT_CALLS = {
    ("restore.py", "self", "verify"): "Restore.verify(): the drill's own checks",
    ("verify.py", "verifier", "verify"): "Verifier.verify(): checks one backup",
}

#: Receiver names that hold boto3 clients in this code base (the last name of ``x.y.<name>.method(...)``).
CLIENT_RECEIVER = re.compile(r"^_?(s3|kms|sns|route53|sts|ec2|client|src|dst)$|^[a-z0-9_]+_client$")

#: Services whose operation names identify a boto3 call whatever the receiver is called.
SERVICES = ("s3", "kms", "sns", "route53")
BOTO3_S3_INJECTED = frozenset(("copy", "upload_file", "download_file", "upload_fileobj", "download_fileobj"))

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
OBJECT_ACTIONS = frozenset(("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject",
                            "s3:GetObjectTagging"))
BUCKET_ACTIONS = frozenset(("s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetEncryptionConfiguration",
                            "s3:GetBucketOwnershipControls"))


def _policy_files():
    return sorted(IAM_DIR.glob("*.json"))


def _load(name):
    return json.loads((IAM_DIR / name).read_text(encoding="utf-8"))


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _allowed(policy, action):
    """Resources of the Allow statements that grant ``action``."""
    resources = []
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow" and action in _as_list(statement["Action"]):
            resources.extend(_as_list(statement["Resource"]))
    return resources


def _operation_names():
    botocore_session = pytest.importorskip("botocore.session")
    from botocore import xform_name  # pylint: disable=import-outside-toplevel

    session = botocore_session.get_session()
    names = {}
    for service in SERVICES:
        for operation in session.get_service_model(service).operation_names:
            names.setdefault(xform_name(operation), set()).add(service)
    return names


# ---------------------------------------------------------------------------------------------------------------
# 1-2. The documents themselves
# ---------------------------------------------------------------------------------------------------------------


def test_policy_files_exist():
    names = {p.name for p in _policy_files()}
    assert {HOST_POLICY, CONTROL_POLICY} <= names, names


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_policy_document_shape(path):
    policy = json.loads(path.read_text(encoding="utf-8"))
    assert policy.get("Version") == "2012-10-17", path.name
    statements = policy.get("Statement")
    assert isinstance(statements, list) and statements, "%s: no Statement list" % path.name
    sids = [s.get("Sid") for s in statements]
    assert len(sids) == len(set(sids)), "%s: duplicate Sid in %s" % (path.name, sids)
    for statement in statements:
        where = "%s, statement %s" % (path.name, statement.get("Sid"))
        for key in ("Effect", "Action", "Resource"):
            assert key in statement, "%s has no %s" % (where, key)
        assert statement["Effect"] in ("Allow", "Deny"), where
        actions = _as_list(statement["Action"])
        assert actions, "%s: empty Action" % where
        for action in actions:
            assert isinstance(action, str) and re.match(r"^[a-z0-9-]+:[A-Za-z0-9]+$", action), \
                "%s: action %r is not service:Action" % (where, action)
            assert "*" not in action, "%s: wildcard in action %r" % (where, action)
        assert _as_list(statement["Resource"]), "%s: empty Resource" % where
        for resource in _as_list(statement["Resource"]):
            # Object actions never on a whole service; bucket actions on bucket ARNs, object actions on keys.
            if resource == "*":
                assert not set(actions) & (OBJECT_ACTIONS | BUCKET_ACTIONS), \
                    "%s: S3 bucket/object actions on Resource *" % where


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_s3_statements_resource_kinds_and_tls(path):
    policy = json.loads(path.read_text(encoding="utf-8"))
    for statement in policy["Statement"]:
        actions = set(_as_list(statement["Action"]))
        resources = _as_list(statement["Resource"])
        where = "%s, statement %s" % (path.name, statement.get("Sid"))
        if actions & OBJECT_ACTIONS:
            assert all(r.startswith("arn:aws:s3:::") and "/" in r for r in resources), \
                "%s: object actions need object ARNs (bucket/prefix/*): %s" % (where, resources)
        if actions & BUCKET_ACTIONS:
            assert all(r.startswith("arn:aws:s3:::") and "/" not in r for r in resources), \
                "%s: bucket actions need bucket ARNs: %s" % (where, resources)
        if statement["Effect"] == "Allow" and any(a.startswith("s3:") for a in actions):
            assert (statement.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport") == "true", \
                "%s: S3 access only over TLS (Condition Bool aws:SecureTransport true)" % where
        if statement["Effect"] == "Allow" and "s3:PutObject" in actions:
            sse = (statement.get("Condition") or {}).get("StringEqualsIfExists", {})
            # IfExists: UploadPart/CompleteMultipartUpload carry no SSE header (docs/roles/s3_storage.md), the
            # bucket's default SSE-KMS applies to them; a header with another value is not allowed.
            assert sse.get("s3:x-amz-server-side-encryption") == "aws:kms", \
                "%s: s3:PutObject without the SSE-KMS condition" % where


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_placeholders_are_documented(path):
    documented = set(PLACEHOLDER.findall(SETUP_DOC.read_text(encoding="utf-8")))
    used = set(PLACEHOLDER.findall(path.read_text(encoding="utf-8")))
    missing = sorted(used - documented)
    assert not missing, "%s uses placeholders not documented in docs/setup.md: %s" % (path.name, missing)


def test_host_policy_never_deletes():
    policy = _load(HOST_POLICY)
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        for action in _as_list(statement["Action"]):
            assert "Delete" not in action, \
                "%s allows %s (statement %s): retention runs from the control node" % (
                    HOST_POLICY, action, statement.get("Sid"))


def test_host_policy_covers_the_replica_for_wal_and_restores():
    policy = _load(HOST_POLICY)
    put = _allowed(policy, "s3:PutObject")
    get = _allowed(policy, "s3:GetObject")
    assert "arn:aws:s3:::${ReplicaBucket}/${BackupPrefix}/wal/*" in put, "dual WAL push needs the replica's wal/"
    assert "arn:aws:s3:::${ReplicaBucket}/${BackupPrefix}/wal-stream/*" in put, \
        "streaming mode uploads the partial segment to the replica's wal-stream/ too"
    assert not any(r.startswith("arn:aws:s3:::${ReplicaBucket}") and not r.endswith(("/wal/*", "/wal-stream/*"))
                   for r in put), "the DB hosts write only WAL into the replica (backups are copied from the control node)"
    assert {"arn:aws:s3:::${BackupBucket}/${BackupPrefix}/*", "arn:aws:s3:::${ReplicaBucket}/${BackupPrefix}/*"} \
        <= set(get), "restores and WAL fetch read both regions"


def test_control_policy_moves_records_and_notifies():
    policy = _load(CONTROL_POLICY)
    assert _allowed(policy, "route53:ChangeResourceRecordSets") == ["arn:aws:route53:::hostedzone/${HostedZoneId}"]
    assert _allowed(policy, "route53:GetChange")
    assert _allowed(policy, "route53:ListResourceRecordSets")
    assert _allowed(policy, "sns:Publish") == ["${EventsTopicArn}"]
    assert _allowed(policy, "s3:DeleteObject"), "retention deletes from the control node"


# ---------------------------------------------------------------------------------------------------------------
# 3. The code: boto3 calls, reachability from the entry points
# ---------------------------------------------------------------------------------------------------------------


def _receiver(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return "%s.%s" % (_receiver(node.value), node.attr)
    if isinstance(node, ast.Call):
        return "%s()" % _receiver(node.func)
    return type(node).__name__


def _last_name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class _FileScan:
    """One Python file: its top-level units (functions, classes, module code), their boto3 calls and references."""

    def __init__(self, key, path, operations):
        self.key = key
        self.path = path
        self.name = path.name
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.operations = operations
        self.from_imports = {}   # local name -> (module_utils file stem, name)
        self.module_aliases = {}  # local name -> module_utils file stem
        self._read_imports()
        self.units = {}           # unit name -> ast node(s)
        module_code = []
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.units[node.name] = [node]
            elif isinstance(node, ast.If) and "__main__" in ast.dump(node.test):
                # The script entry of a host agent: reached only when the file itself is an entry point.
                self.units["<main>"] = [node]
            else:
                module_code.append(node)
        self.units["<module>"] = module_code

    def _read_imports(self):
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == PKG:
                    for alias in node.names:
                        self.module_aliases[alias.asname or alias.name] = alias.name
                elif node.module.startswith(PKG + "."):
                    stem = node.module[len(PKG) + 1:]
                    for alias in node.names:
                        self.from_imports[alias.asname or alias.name] = (stem, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PKG + ".") and alias.asname:
                        self.module_aliases[alias.asname] = alias.name[len(PKG) + 1:]

    def references(self, unit):
        """(file stem, unit name) pairs a unit refers to (same file or other module_utils files)."""
        refs = set()
        for top in self.units[unit]:
            for node in ast.walk(top):
                if isinstance(node, ast.Name):
                    if node.id in self.units and node.id != unit:
                        refs.add((self.key, node.id))
                    if node.id in self.from_imports:
                        refs.add(self.from_imports[node.id])
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    if node.value.id in self.module_aliases:
                        refs.add((self.module_aliases[node.value.id], node.attr))
        if unit != "<module>":
            refs.add((self.key, "<module>"))
        return refs

    def boto3_calls(self, unit):
        """``[(method, line, receiver, problem)]``: the boto3 client calls of a unit."""
        calls = []
        for top in self.units[unit]:
            for node in ast.walk(top):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                method = node.func.attr
                receiver = _receiver(node.func.value)
                last = _last_name(node.func.value)
                client_like = bool(last and CLIENT_RECEIVER.match(last))
                is_operation = method in self.operations
                if (self.name, receiver, method) in NOT_CLIENT_CALLS:
                    continue
                if not (is_operation or (client_like and (method in BOTO3_S3_INJECTED or method == "get_paginator"
                                                          or not method.startswith("_")))):
                    continue
                if method in NO_REQUEST_METHODS:
                    continue
                if method == "get_paginator":
                    arg = node.args[0] if node.args else None
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        calls.append((arg.value, node.lineno, receiver, None))
                    elif self.name == "verify.py" and receiver == "self._client":
                        # ReadOnlyClient.get_paginator forwards only the allowed read operations, which its
                        # callers name literally (found at their own call sites).
                        continue
                    else:
                        calls.append(("get_paginator(?)", node.lineno, receiver,
                                      "get_paginator with a computed operation name: name the operation literally"))
                    continue
                calls.append((method, node.lineno, receiver, None))
        return calls


@pytest.fixture(scope="module")
def code():
    operations = _operation_names()
    scans = {}
    for path in sorted(MODULE_UTILS.glob("*.py")) + sorted(MODULES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        key = path.stem if path.parent == MODULE_UTILS else "modules/" + path.stem
        scans[key] = _FileScan(key, path, operations)
    return scans


def _reachable(scans, start_key):
    """Every (file key, unit) reachable from all units of the file ``start_key``."""
    todo = [(start_key, unit) for unit in scans[start_key].units]
    seen = set()
    while todo:
        key, unit = todo.pop()
        if (key, unit) in seen or key not in scans or unit not in scans[key].units:
            continue
        seen.add((key, unit))
        for ref in scans[key].references(unit):
            todo.append(ref)
    return seen


def _entry_key(relpath):
    path = Path(relpath)
    return path.stem if path.parent.name == "module_utils" else "modules/" + path.stem


def test_boto3_calls_are_found(code):
    """The scanner sees the calls we know about (guards against a scanner that silently finds nothing)."""
    found = {(scan.name, method) for scan in code.values() for unit in scan.units
             for method, _line, _recv, _problem in scan.boto3_calls(unit)}
    for expected in [("walarchive.py", "put_object"), ("s3stream.py", "upload_part"), ("catalog.py", "head_bucket"),
                     ("retention.py", "delete_objects"), ("replicate.py", "copy_object"), ("replicate.py", "copy"),
                     ("aws.py", "describe_key"), ("aws.py", "list_objects_v2")]:
        assert expected in found, "scanner did not find %s in %s" % (expected[1], expected[0])


def test_every_boto3_method_is_mapped(code):
    problems = []
    for scan in code.values():
        for unit in scan.units:
            for method, line, receiver, problem in scan.boto3_calls(unit):
                if problem:
                    problems.append("%s:%d %s.%s: %s" % (scan.name, line, receiver, method, problem))
                elif method not in METHOD_ACTIONS:
                    problems.append(
                        "%s:%d calls %s.%s(): boto3 method %r is not in METHOD_ACTIONS of "
                        "tests/unit/docs/test_iam_policies.py - add it with the IAM actions it needs, then allow "
                        "them in docs/iam/%s or docs/iam/%s (if %s is not a boto3 client, add the call to "
                        "NOT_CLIENT_CALLS)" % (scan.name, line, receiver, method, method, HOST_POLICY,
                                               CONTROL_POLICY, receiver))
    assert not problems, "\n".join(problems)


def test_every_module_reaching_boto3_has_an_entry_point(code):
    missing = []
    for key, scan in code.items():
        is_module = key.startswith("modules/")
        is_agent = "<main>" in scan.units
        if not (is_module or is_agent):
            continue
        rel = str(scan.path.relative_to(ROOT))
        if rel in ENTRY_POINTS:
            continue
        calls = [(k, u) for k, u in _reachable(code, key) if code[k].boto3_calls(u)]
        if calls:
            missing.append("%s reaches boto3 calls (%s) but is not in ENTRY_POINTS: add it with where it runs "
                           "(host and/or control)" % (rel, ", ".join(sorted("%s:%s" % c for c in calls)[:5])))
    assert not missing, "\n".join(missing)


def _required(code):
    """``{where: {action: [(file:line, method)]}}`` from the entry points."""
    required = {"host": {}, "control": {}}
    for relpath, places in ENTRY_POINTS.items():
        key = _entry_key(relpath)
        assert key in code, "ENTRY_POINTS names %s, which does not exist" % relpath
        for file_key, unit in _reachable(code, key):
            scan = code[file_key]
            for method, line, _receiver, problem in scan.boto3_calls(unit):
                if problem or method not in METHOD_ACTIONS:
                    continue  # reported by test_every_boto3_method_is_mapped
                for where in places:
                    if (scan.name, method, where) in DELIBERATELY_DENIED:
                        continue
                    for action in METHOD_ACTIONS[method]:
                        for needed in [action] + IMPLIED_KMS.get(action, []):
                            required[where].setdefault(needed, set()).add(
                                "%s:%d %s (via %s)" % (scan.name, line, method, relpath))
    return required


def test_policies_allow_every_call_of_the_code_that_runs_there(code):
    required = _required(code)
    problems = []
    for where, actions in required.items():
        policy = _load(POLICY_OF[where])
        for action, sites in sorted(actions.items()):
            if not _allowed(policy, action):
                problems.append("docs/iam/%s does not allow %s, needed on the %s by %s" % (
                    POLICY_OF[where], action, "DB hosts" if where == "host" else "control node",
                    "; ".join(sorted(sites)[:4])))
    assert not problems, "\n".join(problems)


def test_host_code_needs_what_the_host_policy_grants(code):
    """The reverse: no S3/KMS action in the DB-host policy that no host code needs (least privilege)."""
    required = _required(code)["host"]
    granted = {a for s in _load(HOST_POLICY)["Statement"] if s["Effect"] == "Allow" for a in _as_list(s["Action"])}
    unused = sorted(a for a in granted if a not in required)
    assert not unused, "docs/iam/%s grants %s, which no code run on the DB hosts needs" % (HOST_POLICY, unused)


def test_deliberately_denied_calls_are_really_denied_and_still_exist(code):
    found = {(scan.name, method) for scan in code.values() for unit in scan.units
             for method, _l, _r, _p in scan.boto3_calls(unit)}
    for (name, method, where), _reason in DELIBERATELY_DENIED.items():
        assert (name, method) in found, "DELIBERATELY_DENIED names %s.%s, which the code no longer calls" % (
            name, method)
        for action in METHOD_ACTIONS[method]:
            assert not _allowed(_load(POLICY_OF[where]), action), (name, method, where)


# ---------------------------------------------------------------------------------------------------------------
# 4. ENTRY_POINTS against the playbooks and roles
# ---------------------------------------------------------------------------------------------------------------


def _tasks(items, delegate=None):
    for task in items or ():
        if not isinstance(task, dict):
            continue
        here = task.get("delegate_to", delegate)
        for key in ("block", "rescue", "always"):
            if key in task:
                yield from _tasks(task[key], here)
        yield task, here


def _module_uses():
    """``[(module, where, file)]`` for every task that runs an rtx.dr module with AWS access."""
    modules = {Path(rel).stem for rel in ENTRY_POINTS if "/modules/" in rel}
    uses = []
    files = sorted((ROOT / "playbooks").glob("*.yml")) + sorted((ROOT / "playbooks" / "tasks").glob("*.yml")) \
        + sorted(ROOT.glob("roles/*/tasks/*.yml"))
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            continue
        plays = [p for p in data if isinstance(p, dict) and "hosts" in p]
        groups = [(p.get("hosts"), p.get(k)) for p in plays for k in ("pre_tasks", "tasks", "post_tasks", "handlers")]
        if not plays:
            groups = [(None, data)]
        for hosts, tasks in groups:
            for task, delegate in _tasks(tasks):
                for key in task:
                    name = key[len("rtx.dr."):] if key.startswith("rtx.dr.") else None
                    if name in modules:
                        local = delegate in ("localhost", "127.0.0.1") or hosts == "localhost"
                        uses.append((name, "control" if local else "host", str(path.relative_to(ROOT))))
    return uses


def test_entry_points_match_playbooks():
    uses = _module_uses()
    assert any(u[0] == "pg_basebackup" for u in uses), "no use of rtx.dr.pg_basebackup found: parser broken?"
    problems = []
    for module, where, path in uses:
        declared = ENTRY_POINTS["plugins/modules/%s.py" % module]
        if where not in declared:
            problems.append("%s runs rtx.dr.%s on the %s, but ENTRY_POINTS says %s: fix ENTRY_POINTS and the "
                            "policy of that place" % (path, module, where, sorted(declared)))
    assert not problems, "\n".join(problems)
