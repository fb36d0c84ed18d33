# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host-side WAL archive and restore commands (``archive_command`` / ``restore_command``).

On the database host, with Debian's python3 (python3-botocore or python3-boto3, and
python3-zstandard for the default compression; ansible is not needed)::

    archive_command = 'PYTHONPATH=/usr/local/lib/rtx-dr python3 -m
        ansible_collections.rtx.dr.plugins.module_utils.wal_agent [--config FILE] push %p'
    restore_command = 'PYTHONPATH=/usr/local/lib/rtx-dr python3 -m
        ansible_collections.rtx.dr.plugins.module_utils.wal_agent [--config FILE] fetch %f %p'

``push`` and ``fetch`` are :func:`walarchive.push` and :func:`walarchive.fetch`.

Configuration: the backup agent's file (default ``/etc/rtx-dr/agent.json``, or
``$RTX_DR_AGENT_CONFIG``). From its top level (``[agent]`` in INI) only the options
shared with the backups are read: the AWS options, ``bucket``, ``prefix``,
``cluster_name``, ``encryption`` and ``kms_key_id``; the other keys belong to the
backup agent and are ignored here. An optional ``"wal"`` object (``[wal]`` in INI)
holds the WAL-only options ``compression`` (default ``auto``: zstd when importable),
``compression_level`` and ``wal_segment_size`` (bytes, default 16 MiB) and may
override the shared ones; unknown keys there are errors. A WAL archive command
cannot ask the server for its ``cluster_name``: ``prefix`` or ``cluster_name`` must
be in the file. ``kms_key_id`` given as an ARN saves one KMS request per call (an
alias is resolved with ``kms:DescribeKey``, as the bucket policy pins the key ARN).

Cross-region copy (``docs/cross_region.md``), in the ``wal`` section: ``replica_bucket``,
``replica_region`` (default ``region``), ``replica_endpoint_url`` (default ``endpoint_url``),
``replica_kms_key_id`` (the replica region's key, required with SSE-KMS) and ``replica_mode``.
``push`` stores the file in the primary bucket, then with the same code in the replica bucket
(same idempotency: same content = success, different content = error, never overwritten).
``replica_mode: sync`` (default): a failed replica push exits 1, PostgreSQL keeps the file and
retries (the primary push is then a cheap no-op). ``async``: a failed replica push is a warning
and the file counts as archived; a conflict (different content) fails in both modes. ``fetch``
reads the archives in ``fetch_order`` (``primary_first`` default, ``replica_first``,
``primary_only``, ``replica_only``; ``fetch --order`` overrides it): a file missing in one, or an
archive that fails, is read from the next.

Batching (module_utils/walspool.py), in the ``wal`` section: ``push_batch`` (default 1) files
per call at most, ``push_parallel`` (default 1) uploads at a time and ``spool_dir`` (needed when
``push_batch`` > 1; a directory the server's user owns, outside the data directory). A ``push %p``
then also pushes the next files waiting in ``pg_wal/archive_status`` and leaves a marker for each;
PostgreSQL's later call for such a file is answered from the marker after its size and SHA256
are checked against the local file, without any S3 request.

Streaming mode (module_utils/walstream.py), in the ``wal`` section: ``stream_dir`` (pg_receivewal's spool,
owned by the server's user, outside the data directory), ``stream_interval`` (default 1 s), ``receivewal_path``
and ``fetch_streamed_partial``. ``stream-receive`` runs pg_receivewal into ``stream_dir`` while the local
server is the primary; ``stream-upload`` pushes the completed segments it leaves there and uploads the partial
one to ``<prefix>/wal-stream/`` every ``stream_interval`` (both run as services, until SIGTERM; they log one
line per problem). They connect to the local server with the top-level ``login_*`` options of the backup agent.
``fetch --partial`` (or ``fetch_streamed_partial: true``) restores a segment that no archive has from its
streamed partial, when that is the newest WAL of the newest timeline: recovery then ends at its last record.

Exit codes: 0 archived / restored (or already archived with the same content);
1 anything else, with one line on stderr (PostgreSQL writes it to its log and
retries the archiving). ``fetch`` of a file that is not archived exits 1 without
a message (``--verbose`` prints one): PostgreSQL asks for files that do not exist.
Nothing is written on stdout.

Per call it costs a Python start, the imports and one client: only botocore is
loaded (not boto3 and its transfer manager), and no ansible.
"""

from __future__ import annotations

import argparse
import os

from ansible_collections.rtx.dr.plugins.module_utils.agent import DEFAULT_CONFIG
from ansible_collections.rtx.dr.plugins.module_utils.agent import Log
from ansible_collections.rtx.dr.plugins.module_utils.agent import build_params
from ansible_collections.rtx.dr.plugins.module_utils.agent import ensure_ansible_basic
from ansible_collections.rtx.dr.plugins.module_utils.agent import read_config
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

PROG = "rtx-dr-wal"
EXIT_OK = 0
EXIT_FAILED = 1

#: WAL-only options: read from the wal section only (top-level keys of these names are the backup's).
WAL_ONLY = frozenset(("compression", "compression_level", "wal_segment_size", "replica_bucket", "replica_region",
                      "replica_endpoint_url", "replica_kms_key_id", "replica_mode", "fetch_order",
                      "spool_dir", "push_batch", "push_parallel",
                      "stream_dir", "stream_interval", "receivewal_path", "fetch_streamed_partial"))
#: The section of the agent configuration with the WAL-only options.
SECTION = "wal"

#: Client timeouts (seconds): an unreachable endpoint fails the call (PostgreSQL retries) instead of hanging.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


def wal_spec():
    """The options of the agent's WAL commands: walarchive's + the batching options of walspool + the streaming
    options of walstream."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.walarchive import wal_argument_spec  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.walspool import SPOOL_OPTIONS  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.walstream import STREAM_OPTIONS  # pylint: disable=import-outside-toplevel

    spec = wal_argument_spec()
    spec.update({name: dict(option) for name, option in SPOOL_OPTIONS.items()})
    spec.update({name: dict(option) for name, option in STREAM_OPTIONS.items()})
    return spec


def stream_spec():
    """:func:`wal_spec` + the PostgreSQL connection options (top-level ``login_*`` keys): the stream commands ask
    the local server for its role and the receiver's position."""
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec  # pylint: disable=import-outside-toplevel

    spec = wal_spec()
    spec.update(postgres_common_argument_spec())
    return spec


def read_wal_config(path):
    """``(top-level options, wal section)`` of the agent configuration at ``path`` (JSON or INI).

    The file is read by the backup agent's own reader (:func:`agent.read_config`), so both agree on its
    format; nested sections other than ``wal`` belong to the backup agent and are ignored here.
    """
    sections = read_config(path)
    common = dict((k, v) for k, v in sections["common"].items() if not isinstance(v, dict))
    return common, dict(sections.get(SECTION) or {})


def params_from_config(path, spec=None):
    """The WAL options (params dict of :func:`walarchive.wal_argument_spec`) from the agent configuration.

    Top-level keys: the shared options (every option but :data:`WAL_ONLY`, aliases accepted),
    the rest is ignored; the ``wal`` section: any option, overriding the top level, unknown keys
    are errors.
    """
    spec = spec or wal_spec()
    names = {}
    for name, arg in spec.items():
        for key in (name,) + tuple(arg.get("aliases") or ()):
            names[key] = name
    common, section = read_wal_config(path)
    overridden = {names.get(key) for key in section}
    given = {key: value for key, value in common.items()
             if key in names and names[key] not in WAL_ONLY and names[key] not in overridden}
    given.update(section)
    return build_params(spec, given, "agent configuration %s" % path)


def make_client(params, service, **overrides):
    """A botocore client from the aws options: what ``aws.boto3_client`` builds, without importing boto3.

    Same credentials rules (``aws.session_kwargs``), certificate checks (``aws.client_verify``),
    user agent and retries; shorter connect/read timeouts (see :data:`CONNECT_TIMEOUT`).
    """
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils import aws  # pylint: disable=import-outside-toplevel

    try:
        import botocore.config  # pylint: disable=import-outside-toplevel
        import botocore.exceptions  # pylint: disable=import-outside-toplevel
        import botocore.session  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MissingLibraryError("botocore", hint=aws.BOTO3_HINT, import_error=exc) from None
    kwargs = aws.session_kwargs(params)
    endpoint_url = params.get("endpoint_url") or None
    options = {"user_agent_extra": aws.USER_AGENT_EXTRA, "retries": dict(aws.DEFAULT_RETRIES),
               "connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    options.update(overrides)
    if service == "s3" and endpoint_url:
        options["s3"] = {"addressing_style": "path"}
    try:
        session = botocore.session.Session(profile=kwargs.get("profile_name"))
        if kwargs.get("aws_access_key_id"):
            session.set_credentials(kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"],
                                    kwargs.get("aws_session_token"))
        return session.create_client(service, region_name=kwargs.get("region_name"), endpoint_url=endpoint_url,
                                     verify=aws.client_verify(params), config=botocore.config.Config(**options))
    except botocore.exceptions.ProfileNotFound as exc:
        raise InvalidValueError(
            "AWS profile %r (option profile or AWS_PROFILE) not found: %s" % (kwargs.get("profile_name"), exc),
            hint="Define the profile for the PostgreSQL server's user, or set access_key/secret_key.",
        ) from None
    except (botocore.exceptions.NoRegionError, ValueError) as exc:
        raise aws.client_creation_error(
            exc, service, endpoint_url,
            region_hint="Set region in the agent configuration (or AWS_REGION in the server's environment).") from None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="rtx.dr WAL archive: PostgreSQL archive_command (push %%p) and restore_command "
        "(fetch %%f %%p) to/from S3 with the collection's module_utils.",
        epilog="Exit codes: 0 done, 1 failed or (fetch) not archived.",
    )
    parser.add_argument("--config", "-c", default=os.environ.get("RTX_DR_AGENT_CONFIG") or DEFAULT_CONFIG,
                        help="JSON or INI agent configuration (default %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="one line on stderr also on success and for files that are not archived")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    push = sub.add_parser("push", help="archive one WAL file: push %%p")
    push.add_argument("path", help="the WAL file (PostgreSQL's %%p, relative to the data directory)")
    fetch = sub.add_parser("fetch", help="restore one WAL file: fetch %%f %%p")
    fetch.add_argument("name", help="the WAL file name (PostgreSQL's %%f)")
    fetch.add_argument("dest", help="where to write it (PostgreSQL's %%p)")
    fetch.add_argument("--partial", action="store_true",
                       help="when no archive has the segment, restore its streamed partial (streaming mode; "
                       "default: fetch_streamed_partial of the configuration)")
    fetch.add_argument("--order", choices=["primary_first", "replica_first", "primary_only", "replica_only"],
                       help="which archive to read first (default: fetch_order of the configuration)")
    sub.add_parser("check-config", help="validate the WAL settings of the configuration; contacts nothing")
    upload = sub.add_parser("stream-upload", help="streaming mode: push completed segments of stream_dir and upload "
                            "the partial one every stream_interval seconds (a service)")
    upload.add_argument("--once", action="store_true", help="one pass, then exit")
    sub.add_parser("stream-receive", help="streaming mode: run pg_receivewal into stream_dir while the local server "
                   "is the primary (a service)")
    return parser.parse_args(argv)


def run(args, log, client_factory=None):
    """Run the command; the result dict of push/fetch. Raises what they raise."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # pylint: disable=import-outside-toplevel

    client_factory = client_factory or make_client
    if args.command in ("stream-upload", "stream-receive"):
        return run_stream(args, log, client_factory)
    params = params_from_config(args.config)
    if args.command == "check-config":
        walarchive.check_options(params)
        if params.get("stream_dir"):
            from ansible_collections.rtx.dr.plugins.module_utils import walstream  # pylint: disable=import-outside-toplevel

            walstream.check_stream_options(params, "the wal section of %s" % args.config)
        log("WAL settings of %s are valid (s3://%s/%s, compression %s)" % (
            args.config, params.get("bucket"), walarchive.wal_prefix(walarchive.resolve_prefix(params)),
            params.get("compression")))
        return {}
    if args.command == "push":
        return run_push(args, params, log, client_factory)
    walarchive.check_options(params, upload=False)
    replica = walarchive.replica_params(params, upload=False)
    order = walarchive.FETCH_ORDERS[getattr(args, "order", None) or params.get("fetch_order") or "primary_first"]
    if replica is None and "primary" not in order:
        raise InvalidValueError(
            "fetch order %s reads the replica archive, but replica_bucket is not set in %s"
            % ("/".join(order), args.config),
            hint="Set replica_bucket (and replica_region) in the wal section, or fetch from the primary.")
    archives = {"primary": params, "replica": replica}
    sources = [(label, _lazy_client(client_factory, archives[label]), archives[label])
               for label in order if archives[label] is not None]
    try:
        return walarchive.fetch_any(sources, args.name, args.dest, log=log if args.verbose else None)
    except walarchive.WalNotFoundError:
        if not (getattr(args, "partial", False) or params.get("fetch_streamed_partial")):
            raise
    from ansible_collections.rtx.dr.plugins.module_utils import walstream  # pylint: disable=import-outside-toplevel

    return walstream.fetch_streamed_partial(sources, args.name, args.dest, log, verbose=args.verbose)


#: Client settings of the stream uploader: it retries on the next tick (every second) anyway.
STREAM_CLIENT = {"retries": {"mode": "standard", "total_max_attempts": 2}, "connect_timeout": 3, "read_timeout": 20}


def run_stream(args, log, client_factory):
    """``stream-upload`` / ``stream-receive``: run until SIGTERM/SIGINT (module_utils/walstream.py)."""
    import signal  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel

    from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils import walstream  # pylint: disable=import-outside-toplevel

    params = params_from_config(args.config, stream_spec())
    walstream.check_stream_options(params, "the wal section of %s" % args.config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *ignored: stop.set())
    probe = walstream.ServerProbe(params)
    if args.command == "stream-receive":
        walstream.Receiver(params, log, probe).run(stop)
        return {}
    walarchive.check_options(params)

    def s3_client(archive):
        if client_factory is make_client:
            return make_client(archive, "s3", **STREAM_CLIENT)
        return client_factory(archive, "s3")

    s3 = s3_client(params)
    replica = walarchive.replica_params(params)
    if replica is not None:
        replica = (s3_client(replica), replica)
    uploader = walstream.Uploader(params, s3, log, probe, kms=lambda: client_factory(params, "kms"), replica=replica,
                                  replica_kms=(lambda: client_factory(replica[1], "kms")) if replica else None)
    log("uploading the WAL stream of %s every %s s to s3://%s/%s%s" % (
        uploader.directory, uploader.interval, uploader.settings["bucket"],
        walstream.stream_prefix(uploader.settings["prefix"]),
        " and s3://%s/%s" % (replica[1]["bucket"], walstream.stream_prefix(uploader.replica["settings"]["prefix"]))
        if replica else ""))
    uploader.run(stop, once=getattr(args, "once", False))
    return uploader.counts


def run_push(args, params, log, client_factory):
    """``push %p``: the file asked for, and with ``push_batch`` > 1 the next ready ones (module_utils/walspool.py)."""
    from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils import walspool  # pylint: disable=import-outside-toplevel

    walarchive.check_options(params)  # option errors before any client is built
    spool_dir, batch, parallel = walspool.check_spool_options(params, "the wal section of %s" % args.config)
    markers = walspool.Markers(spool_dir) if spool_dir else None
    if markers is not None:
        marker = markers.consume(args.path)
        if marker is not None:  # pushed ahead by an earlier call, same size and SHA256 as this file
            if args.verbose:
                log("%s was pushed ahead to %s with this content: nothing to do" % (args.path, marker.get("key")))
            return {"key": marker.get("key"), "name": os.path.basename(args.path), "bytes": marker.get("bytes"),
                    "sha256": marker.get("sha256"), "skipped_existing": True, "pushed_ahead": []}
    s3 = client_factory(params, "s3")
    replica = walarchive.replica_params(params)
    verbose = log if args.verbose else None

    def push_one(path):
        result = walarchive.push(s3, params, path, log=verbose, kms=lambda: client_factory(params, "kms"))
        if replica is not None:
            result["replica"] = push_replica(replica, params.get("replica_mode") or "sync", path, args.verbose, log,
                                             client_factory)
        return result

    if markers is None or batch <= 1:
        return push_one(args.path)
    if not os.path.isdir(spool_dir):
        log.warning("spool_dir %s does not exist: pushing only %s (create it, owned by the server's user, to push "
                    "ahead)" % (spool_dir, args.path))
        return push_one(args.path)
    markers.prune()
    others = walspool.ready_files(args.path, batch - 1, markers)
    result = walspool.push_batch(push_one, args.path, others, parallel, markers, log)
    if args.verbose and result["pushed_ahead"]:
        log("pushed ahead of PostgreSQL: %s" % ", ".join(result["pushed_ahead"]))
    return result


def _lazy_client(client_factory, params):
    return lambda: client_factory(params, "s3")


def push_replica(replica, mode, path, verbose, log, client_factory):
    """Push the WAL file at ``path`` into the replica archive after the primary push succeeded.

    ``sync``: any failure raises (the agent exits 1, PostgreSQL keeps the file and retries; the primary push is
    then an idempotent no-op). ``async``: a failure is logged as a warning and the file counts as archived
    (``playbooks/backup_incremental.yml`` copies it later) - except a different content under the same name
    (:class:`walarchive.WalConflictError`), which is never hidden in either mode.
    """
    from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # pylint: disable=import-outside-toplevel

    where = "s3://%s (region %s)" % (replica["bucket"], replica.get("region"))
    try:
        s3 = client_factory(replica, "s3")
        return walarchive.push(s3, replica, path, log=log if verbose else None,
                               kms=lambda: client_factory(replica, "kms"))
    except walarchive.WalConflictError as exc:
        exc.msg = "replica archive %s: %s" % (where, exc.msg)
        raise
    except RtxDrError as exc:
        if mode == "async":
            log.warning("push %s: archived in the primary bucket, but NOT in the replica %s: %s (replica_mode "
                        "async: counted as archived; playbooks/backup_incremental.yml copies it later)"
                        % (path, where, exc.msg))
            return {"failed": True, "error": exc.msg}
        exc.msg = ("archived in the primary bucket, but the push to the replica %s failed: %s (replica_mode sync: "
                   "PostgreSQL keeps the file and retries)" % (where, exc.msg))
        raise


def main(argv=None, stderr=None, client_factory=None):
    """Entry point; returns the exit code (0 done, 1 failed or not archived)."""
    args = parse_args(argv)
    log = Log("wal-%s" % args.command, stderr)
    try:
        run(args, log, client_factory)
    except RtxDrError as exc:
        from ansible_collections.rtx.dr.plugins.module_utils.walarchive import WalNotFoundError  # pylint: disable=import-outside-toplevel

        if isinstance(exc, WalNotFoundError):
            if args.verbose:
                log("%s: not found in the archive" % args.name)
            return EXIT_FAILED
        what = {"push": getattr(args, "path", ""), "fetch": getattr(args, "name", "")}.get(args.command, args.config)
        log.error("%s %s failed: %s" % (args.command, what, exc))
        return EXIT_FAILED
    except Exception as exc:  # pylint: disable=broad-exception-caught
        log.error("%s failed: unexpected error %s: %s (probably a bug in rtx.dr; rerun with --verbose by hand)"
                  % (args.command, type(exc).__name__, exc))
        if args.verbose:
            import traceback  # pylint: disable=import-outside-toplevel

            log.error(" | ".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
