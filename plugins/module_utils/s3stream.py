# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Memory-bounded streaming upload to S3 with SHA256 and SSE-KMS.

:class:`StreamUploader` takes bytes with ``write()`` and sends them to one S3
object: a single ``put_object`` when everything fits in one part, else a
multipart upload whose parts are sent (by one background thread) as they fill.
At most two parts are in memory: the one being filled and the one being sent
(``write()`` waits for the part in flight before it hands over the next one).
The two part buffers (``bytearray``) swap roles: a full buffer is handed to
botocore as it is, without a copy (botocore hashes and sends a ``bytearray``
body in place, where a ``bytes`` body is wrapped in a ``BytesIO`` and copied
chunk by chunk for the payload hash, the checksum and the socket), and the
buffer of the part sent before is refilled once its upload returned.
The SHA256 of the bytes is computed on the way. A single ``put_object`` carries
it as the ``sha256`` metadata. A multipart upload only knows it at the end,
when S3 has fixed the object's metadata (set by ``CreateMultipartUpload``), so
it is stored as the object tag ``sha256`` (``PutObjectTagging``): a metadata
change would need a server-side self-copy, which in a versioned bucket keeps
the uploaded bytes a second time as a noncurrent version (30 days by the
bucket's lifecycle, the Object Lock retention when that is on) and costs a
copy of every byte. :func:`stored_sha256` reads either (metadata first: the
multipart objects of older backups have it there). Any failure, including an
exception raised by the caller between writes (use it as a context manager or
call ``abort()``), aborts the multipart upload.
"""

from __future__ import annotations

import hashlib
import threading

from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10000

#: The object tag holding the SHA256 of a multipart-uploaded object (see the module's docstring).
SHA256_TAG = "sha256"


def sse_args(encryption, kms_key_id=None):
    """S3 request arguments for the encryption settings.

    ``encryption`` is ``aws:kms`` (``kms_key_id`` required: alias, key id or ARN) or ``none``.
    """
    if encryption == "none":
        return {}
    if encryption != "aws:kms":
        raise InvalidValueError("Invalid encryption %r: expected aws:kms or none" % (encryption,))
    if not kms_key_id:
        raise InvalidValueError(
            "encryption is aws:kms but kms_key_id is not set",
            hint="Set kms_key_id to the KMS key (alias/..., key id or ARN) that must encrypt the backups, "
            "or set 'encryption: none' explicitly to store them without SSE-KMS.",
        )
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}


class StreamUploader:
    """Stream bytes into ``s3://bucket/key``.

    :param client: a boto3 S3 client.
    :param extra_args: arguments added to the PUT / CreateMultipartUpload / copy, e.g. the result of
        :func:`sse_args` plus ``ContentType``.
    :param metadata: user metadata (dict of str); ``sha256`` is added at the end.
    :param part_size: bytes per part, at least 5 MiB.
    :param on_part: optional callable ``(part_number, size)`` called after each part is sent.

    ``close()`` returns ``{"key", "size", "sha256", "parts", "etag"}``.
    """

    def __init__(self, client, bucket, key, extra_args=None, metadata=None, part_size=DEFAULT_PART_SIZE,
                 on_part=None):
        if part_size < MIN_PART_SIZE:
            raise InvalidValueError(
                "part size %d is below the S3 minimum of 5 MiB" % part_size,
                hint="Set part_size_mb to 5 or more.",
            )
        self.client = client
        self.bucket = bucket
        self.key = key
        self.extra_args = dict(extra_args or {})
        self.metadata = dict(metadata or {})
        self.part_size = part_size
        self.on_part = on_part
        self.size = 0
        self.upload_id = None
        self.parts = []
        self.closed = False
        self.aborted = False
        self._sha = hashlib.sha256()
        self._buffer = bytearray()
        self._fill = 0  # bytes of the buffer holding data (the buffer is reused once a part long)
        self._inflight = None  # the buffer of the part being sent
        self._spare = None  # the buffer of the part sent before, free again once its upload returned
        self._thread = None
        self._thread_error = None
        self._lock = threading.Lock()

    # -- context manager ------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False

    # -- writing ----------------------------------------------------------------
    def write(self, data):
        """Append ``data``; sends a part whenever one is full."""
        if self.closed or self.aborted:
            raise RtxDrError("write to s3://%s/%s after close/abort" % (self.bucket, self.key))
        if not data:
            return
        self._sha.update(data)
        self.size += len(data)
        with memoryview(data) as view:
            pos = 0
            while pos < len(view):
                # The buffer never holds more than one part: a full one is sent before more is added.
                take = min(self.part_size - self._fill, len(view) - pos)
                if self._fill == len(self._buffer):
                    # Until the first part is full the buffer grows (a small object stays small) ...
                    self._buffer += view[pos:pos + take]
                else:
                    # ... then it is reused in place: no reallocations that would fragment the heap.
                    self._buffer[self._fill:self._fill + take] = view[pos:pos + take]
                self._fill += take
                pos += take
                if self._fill >= self.part_size:
                    self._send_buffer()

    def _where(self):
        return "s3://%s/%s" % (self.bucket, self.key)

    def _start_multipart(self):
        args = dict(self.extra_args)
        args["Metadata"] = dict(self.metadata)
        try:
            response = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **args)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise error_from_boto(exc, "starting the multipart upload of %s" % self._where()) from None
        self.upload_id = response["UploadId"]

    def _wait_part(self):
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        inflight, self._inflight = self._inflight, None
        if self._thread_error is not None:
            error, self._thread_error = self._thread_error, None
            raise error
        if isinstance(inflight, bytearray):
            # Its upload returned: botocore holds on to nothing, the buffer can be filled again.
            self._spare = inflight

    def _upload_part(self, number, part):
        try:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=part
            )
            with self._lock:
                self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
            if self.on_part is not None:
                self.on_part(number, len(part))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            self._thread_error = error_from_boto(exc, "uploading part %d of %s" % (number, self._where()))

    def _send_buffer(self):
        """Send the buffer as the next part (in a background thread); start the multipart upload first."""
        if self.upload_id is None:
            self._start_multipart()
        # At most one part in flight: wait for the previous one before handing over the next, so that at
        # most two parts' worth of memory exists at any time: the one in flight and the one being filled.
        self._wait_part()
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise RtxDrError(
                "%s would need more than %d parts" % (self._where(), MAX_PARTS),
                hint="Raise part_size_mb.",
            )
        if self._fill == self.part_size == len(self._buffer):
            # A full part: the buffer itself goes (no copy); the spare one (or a new one) is filled next.
            part = self._buffer
            self._buffer = self._spare if self._spare is not None else bytearray(self.part_size)
            self._spare = None
        else:
            # The last, shorter part: a copy (a buffer is never resized once handed to botocore).
            with memoryview(self._buffer) as view:
                part = bytes(view[:self._fill])
        self._fill = 0
        self._inflight = part
        self._thread = threading.Thread(target=self._upload_part, args=(number, part), daemon=True)
        self._thread.start()

    # -- finishing ----------------------------------------------------------------
    def close(self):
        """Send the rest, complete the upload, store the sha256 (metadata or tag); return the object's facts."""
        if self.closed:
            raise RtxDrError("%s already closed" % self._where())
        try:
            digest = self._sha.hexdigest()
            if self.upload_id is None:
                metadata = dict(self.metadata, sha256=digest)
                with memoryview(self._buffer) as view:
                    body = bytes(view[:self._fill])
                self._buffer = bytearray()
                self._fill = 0
                try:
                    response = self.client.put_object(
                        Bucket=self.bucket, Key=self.key, Body=body, Metadata=metadata, **self.extra_args
                    )
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    raise error_from_boto(exc, "uploading %s" % self._where()) from None
                etag = response.get("ETag")
            else:
                if self._fill:
                    self._send_buffer()
                self._buffer = bytearray()
                self._wait_part()
                self._spare = None
                parts = sorted(self.parts, key=lambda p: p["PartNumber"])
                try:
                    response = self.client.complete_multipart_upload(
                        Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
                    )
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    raise error_from_boto(exc, "completing the multipart upload of %s" % self._where()) from None
                self.upload_id = None
                etag = response.get("ETag")
                try:
                    self.client.put_object_tagging(Bucket=self.bucket, Key=self.key, Tagging={
                        "TagSet": [{"Key": SHA256_TAG, "Value": digest}]})
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    raise error_from_boto(exc, "tagging %s with its sha256" % self._where()) from None
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return {"key": self.key, "size": self.size, "sha256": digest, "parts": len(self.parts), "etag": etag}

    def abort(self):
        """Abort the multipart upload (if any) and drop the buffers; never raises."""
        if self.aborted or self.closed:
            return
        self.aborted = True
        self._buffer = bytearray()
        self._fill = 0
        try:
            self._wait_part()
        except Exception:  # pylint: disable=broad-exception-caught
            pass
        self._spare = None
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # pylint: disable=broad-exception-caught
                pass
            self.upload_id = None


def stored_sha256(client, bucket, key, head):
    """The SHA256 object ``key`` carries (``head``: its ``head_object`` response): the ``sha256`` metadata of a
    single PUT (or of a multipart object of an older version), else its ``sha256`` tag (a multipart upload);
    None when it has neither. Reading the tag needs s3:GetObjectTagging."""
    stored = (head.get("Metadata") or {}).get("sha256")
    if stored:
        return stored
    try:
        tags = client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet") or ()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "reading the tags of s3://%s/%s (its sha256)" % (bucket, key)) from None
    return next((tag.get("Value") for tag in tags if tag.get("Key") == SHA256_TAG), None)


def list_multipart_uploads(client, bucket, prefix):
    """Every unfinished multipart upload under ``prefix``: list of ``{"key", "upload_id", "initiated"}``."""
    uploads = []
    args = {"Bucket": bucket, "Prefix": prefix}
    try:
        while True:
            response = client.list_multipart_uploads(**args)
            for upload in response.get("Uploads") or ():
                uploads.append(
                    {"key": upload["Key"], "upload_id": upload["UploadId"], "initiated": upload.get("Initiated")}
                )
            if not response.get("IsTruncated"):
                break
            args["KeyMarker"] = response.get("NextKeyMarker")
            args["UploadIdMarker"] = response.get("NextUploadIdMarker")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "listing multipart uploads under s3://%s/%s" % (bucket, prefix)) from None
    return uploads


def abort_upload(client, bucket, key, upload_id):
    """Abort one multipart upload; an upload that is already gone counts as done."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        code = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")
        if code != "NoSuchUpload":
            raise error_from_boto(exc, "aborting the multipart upload of s3://%s/%s" % (bucket, key)) from None


def sha256_of_object(client, bucket, key, chunk_size=MIB):
    """Download ``key`` and return ``(sha256 hex, size)`` (for verification and tests)."""
    digest = hashlib.sha256()
    size = 0
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(chunk_size), b""):
            digest.update(chunk)
            size += len(chunk)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "reading s3://%s/%s" % (bucket, key)) from None
    return digest.hexdigest(), size
