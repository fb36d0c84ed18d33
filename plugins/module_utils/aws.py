# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""AWS (and S3-compatible) connection helpers, following amazon.aws conventions.

:func:`aws_common_argument_spec` gives the same option names, aliases and
environment fallbacks as ``amazon.aws`` modules (documented by the
``rtx.dr.aws`` doc fragment); :func:`boto3_client` turns those options into a
boto3 client; :func:`error_from_boto` turns a boto3/botocore exception into an
:class:`~ansible_collections.rtx.dr.plugins.module_utils.errors.RtxDrError`
with a hint. boto3 is imported lazily so modules load, and fail clearly, on
hosts without it.
"""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback

from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

BOTO3_HINT = (
    "Install boto3 for the Python interpreter Ansible uses on the target host: "
    "'apt-get install python3-boto3' (Debian/Ubuntu) or 'pip install boto3'."
)

USER_AGENT_EXTRA = "rtx.dr"

# Retries for throttling and transient errors (botocore "standard" mode), 5 tries in all.
DEFAULT_RETRIES = {"mode": "standard", "total_max_attempts": 5}


def aws_common_argument_spec():
    """Return the argument_spec shared by every rtx.dr module that talks to AWS / S3.

    Same names, aliases and environment fallbacks as amazon.aws; documented by
    the ``rtx.dr.aws`` doc fragment. Keep both in step.
    """
    return dict(
        region=dict(
            type="str",
            aliases=["aws_region", "ec2_region"],
            fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"]),
        ),
        endpoint_url=dict(
            type="str",
            aliases=["aws_endpoint_url", "endpoint"],
            fallback=(env_fallback, ["AWS_URL", "AWS_ENDPOINT_URL"]),
        ),
        access_key=dict(
            type="str",
            aliases=["aws_access_key_id", "aws_access_key", "ec2_access_key"],
            fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"]),
            no_log=False,
        ),
        secret_key=dict(
            type="str",
            aliases=["aws_secret_access_key", "aws_secret_key"],
            fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"]),
            no_log=True,
        ),
        session_token=dict(
            type="str",
            aliases=["aws_session_token"],
            fallback=(env_fallback, ["AWS_SESSION_TOKEN"]),
            no_log=True,
        ),
        profile=dict(
            type="str",
            aliases=["aws_profile"],
            fallback=(env_fallback, ["AWS_PROFILE"]),
        ),
        validate_certs=dict(type="bool", default=True),
        aws_ca_bundle=dict(type="path", fallback=(env_fallback, ["AWS_CA_BUNDLE"])),
    )


def load_boto3():
    """Return ``(boto3, botocore)``; raise :class:`MissingLibraryError` when absent."""
    try:
        import boto3  # pylint: disable=import-outside-toplevel
        import botocore  # pylint: disable=import-outside-toplevel
        import botocore.config  # pylint: disable=import-outside-toplevel
        import botocore.exceptions  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        raise MissingLibraryError("boto3", hint=BOTO3_HINT, import_error=exc) from None
    return boto3, botocore


def _none_if_empty(value):
    # botocore treats '' as a value; amazon.aws lets users pass '' to mask an
    # environment variable, so '' means "not set".
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def session_kwargs(params):
    """``boto3.session.Session`` keyword arguments from the module options.

    Raises :class:`InvalidValueError` when both ``profile`` and explicit keys are
    given (as amazon.aws does: botocore would silently prefer the keys).
    """
    profile = _none_if_empty(params.get("profile"))
    access_key = _none_if_empty(params.get("access_key"))
    secret_key = _none_if_empty(params.get("secret_key"))
    session_token = _none_if_empty(params.get("session_token"))
    if profile and (access_key or secret_key or session_token):
        raise InvalidValueError(
            "Options profile and access_key/secret_key/session_token are mutually exclusive, "
            "but both were given (possibly through AWS_PROFILE / AWS_ACCESS_KEY_ID in the environment)",
            hint="Use either a named profile or explicit keys; set the unwanted one to '' to mask "
            "an environment variable.",
            details={"profile": profile},
        )
    if bool(access_key) != bool(secret_key):
        raise InvalidValueError(
            "Options access_key and secret_key must be given together; only %s was set"
            % ("access_key" if access_key else "secret_key"),
            hint="Set both (or neither, to use a profile, the environment or an instance role).",
        )
    kwargs = {}
    if profile:
        kwargs["profile_name"] = profile
    else:
        kwargs["aws_access_key_id"] = access_key
        kwargs["aws_secret_access_key"] = secret_key
        kwargs["aws_session_token"] = session_token
    region = _none_if_empty(params.get("region"))
    if region:
        kwargs["region_name"] = region
    return kwargs


def client_verify(params):
    """The ``verify`` argument for boto3: the CA bundle path, True or False."""
    validate_certs = params.get("validate_certs", True)
    validate_certs = True if validate_certs is None else bool(validate_certs)
    ca_bundle = _none_if_empty(params.get("aws_ca_bundle"))
    if validate_certs and ca_bundle:
        return ca_bundle
    return validate_certs


def boto3_session(params):
    """A ``boto3.session.Session`` built from the module options (see :func:`aws_common_argument_spec`)."""
    boto3, botocore = load_boto3()
    kwargs = session_kwargs(params)
    try:
        return boto3.session.Session(**kwargs)
    except botocore.exceptions.ProfileNotFound as exc:
        raise InvalidValueError(
            "AWS profile %r (option profile or AWS_PROFILE) not found: %s" % (kwargs.get("profile_name"), exc),
            hint="Define the profile in ~/.aws/config or ~/.aws/credentials of the user running the module "
            "on the target host, or pass access_key/secret_key.",
        ) from None


def _knows_checksum_calculation(botocore):
    """botocore >= 1.36 knows ``request_checksum_calculation`` (older ones add no default checksums)."""
    return "request_checksum_calculation" in getattr(botocore.config.Config, "OPTION_DEFAULTS", {})


def boto3_client(params, service, config=None, **client_kwargs):
    """A boto3 client for ``service`` (e.g. ``"s3"``) from the module options.

    :param params: ``module.params`` or any dict with the keys of
        :func:`aws_common_argument_spec`.
    :param config: optional dict (or ``botocore.config.Config``) merged over the
        defaults: standard retry mode with 5 attempts in all and an ``rtx.dr`` user agent
        suffix. For ``s3`` with an ``endpoint_url`` (MinIO, moto, Ceph...), path
        style addressing is the default.
    :param client_kwargs: passed on to ``Session.client()``.
    :raises MissingLibraryError: boto3 is not installed.
    :raises InvalidValueError: conflicting credentials, unknown profile, no region.
    """
    _boto3, botocore = load_boto3()
    session = boto3_session(params)
    endpoint_url = _none_if_empty(params.get("endpoint_url"))

    defaults = {"user_agent_extra": USER_AGENT_EXTRA, "retries": dict(DEFAULT_RETRIES)}
    if service == "s3" and endpoint_url:
        defaults["s3"] = {"addressing_style": "path"}
        if endpoint_url.lower().startswith("http://") and _knows_checksum_calculation(botocore):
            # Over plain HTTP botocore SHA256-signs every request body (S3 checks it); the CRC32 it adds
            # by default since 1.36 would be a second pass over every byte uploaded for no extra protection.
            # Over HTTPS the default stays: there the CRC32 is what replaces the payload signature.
            defaults["request_checksum_calculation"] = "when_required"
    merged = botocore.config.Config(**defaults)
    if config is not None:
        if isinstance(config, dict):
            config = botocore.config.Config(**config)
        merged = merged.merge(config)

    try:
        return session.client(
            service,
            endpoint_url=endpoint_url,
            verify=client_verify(params),
            config=merged,
            **client_kwargs,
        )
    except (botocore.exceptions.NoRegionError, ValueError) as exc:
        raise client_creation_error(exc, service, endpoint_url) from None


def client_creation_error(exc, service, endpoint_url,
                          region_hint="Set region (or AWS_REGION / AWS_DEFAULT_REGION, or a region in the AWS profile)."):
    """The :class:`InvalidValueError` for an exception raised while a client is built.

    botocore raises ``NoRegionError`` without a region and ``ValueError`` for a malformed
    endpoint URL; shared by :func:`boto3_client` and the WAL agent's botocore-only client.
    """
    if isinstance(exc, ValueError):
        return InvalidValueError(
            "Invalid option endpoint_url %r: %s" % (endpoint_url, exc),
            hint="Use a full URL such as https://s3.eu-west-1.amazonaws.com or http://minio:9000.",
        )
    return InvalidValueError(
        "No AWS region for service %s: option region is not set and no default region is configured" % service,
        hint=region_hint,
    )


_CLIENT_ERROR_HINTS = {
    "AccessDenied": "Check the IAM policy of the credentials in use (access_key/profile/instance role).",
    "InvalidAccessKeyId": "Check access_key (or AWS_ACCESS_KEY_ID): the key is unknown to the endpoint.",
    "SignatureDoesNotMatch": "Check secret_key (or AWS_SECRET_ACCESS_KEY) and the region.",
    "ExpiredToken": "The session_token has expired: obtain fresh temporary credentials.",
    "NoSuchBucket": "Check the bucket name; create the bucket first if it is new.",
    "NoSuchKey": "The object does not exist: check the key/prefix.",
    "AuthorizationHeaderMalformed": "Check region: the bucket lives in another region.",
    "PermanentRedirect": "Check region: the bucket lives in another region.",
}


def error_from_boto(exc, action, details=None):
    """Turn a boto3/botocore exception raised while doing ``action`` into an :class:`RtxDrError`.

    ``action`` says what was being done, e.g. ``"uploading s3://bucket/key"``.
    Usage: ``except Exception as e: raise error_from_boto(e, "listing bucket x") from None``.
    """
    details = dict(details or {})
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        code = error.get("Code") or "Unknown"
        details.update(
            {
                "error_code": code,
                "http_status": meta.get("HTTPStatusCode"),
                "request_id": meta.get("RequestId"),
            }
        )
        hint = _CLIENT_ERROR_HINTS.get(code, "See the AWS error code and message.")
        return RtxDrError(
            "AWS error while %s: %s: %s" % (action, code, error.get("Message") or exc),
            hint=hint,
            details=details,
        )
    name = type(exc).__name__
    details["error_type"] = name
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return RtxDrError(
            "No usable AWS credentials while %s: %s" % (action, exc),
            hint="Set access_key and secret_key, or profile, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "on the target host, or give the host an instance role.",
            details=details,
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError"):
        return ConnectionFailedError(
            "Cannot reach the AWS endpoint while %s: %s" % (action, exc),
            hint="Check endpoint_url/region and the network path from the target host to the endpoint.",
            details=details,
            server_down=True,
        )
    if name == "SSLError":
        return ConnectionFailedError(
            "TLS error talking to the AWS endpoint while %s: %s" % (action, exc),
            hint="Set aws_ca_bundle to the CA that signed the endpoint's certificate "
            "(validate_certs=false only for throwaway labs).",
            details=details,
        )
    return RtxDrError("Error while %s: %s: %s" % (action, name, exc), details=details)


def list_pages(s3, bucket, prefix, what="listing", **kwargs):
    """The pages of one paginated ``list_objects_v2`` listing of ``prefix`` (extra arguments such as ``Delimiter``
    passed on); a failure of S3 raises :class:`RtxDrError` saying ``<what> s3://<bucket>/<prefix>``.

    Only S3's errors are turned into that message: an exception of the caller's loop body is its own.
    """
    try:
        yield from s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **kwargs)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "%s s3://%s/%s" % (what, bucket, prefix)) from None


def list_objects(s3, bucket, prefix, what="listing", **kwargs):
    """Every listed object (the ``Contents`` items: Key, Size, LastModified...) under ``prefix``; see
    :func:`list_pages`."""
    for page in list_pages(s3, bucket, prefix, what, **kwargs):
        yield from page.get("Contents") or ()


def describe_kms_key(kms, key_id, what, hint):
    """``KeyMetadata`` of KMS key ``key_id`` (alias, key id or ARN) from ``kms.describe_key``.

    ``what`` names the key in errors, e.g. ``"KMS key alias/x (option kms_key_id)"``. A key that does not exist:
    :class:`RtxDrError` "<what> does not exist in this account/region" with ``hint``; any other failure:
    :func:`error_from_boto` ("looking up <what>"). The key's state is the caller's to judge.
    """
    try:
        return kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except Exception as exc:  # pylint: disable=broad-exception-caught
        error = error_from_boto(exc, "looking up %s" % what, {"kms_key_id": key_id})
        if error.details.get("error_code") in ("NotFoundException", "NotFound"):
            error = RtxDrError("%s does not exist in this account/region" % what, hint=hint,
                               details={"kms_key_id": key_id})
        raise error from None
