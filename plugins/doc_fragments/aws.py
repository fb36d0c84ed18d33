# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options of rtx.dr.plugins.module_utils.aws.aws_common_argument_spec(), named and
    # aliased as in amazon.aws. Keep both in step: names, aliases, defaults, types.
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region to use.
      - The E(AWS_REGION) or E(AWS_DEFAULT_REGION) environment variables may also be used,
        in decreasing order of preference; else the region of the AWS profile applies.
    type: str
    aliases: [ aws_region, ec2_region ]
  endpoint_url:
    description:
      - URL to connect to instead of the default AWS endpoints, for example the URL of a
        MinIO or other S3-compatible service.
      - For S3, path style addressing is used when this is set.
      - The E(AWS_URL) or E(AWS_ENDPOINT_URL) environment variables may also be used,
        in decreasing order of preference.
    type: str
    aliases: [ aws_endpoint_url, endpoint ]
  access_key:
    description:
      - AWS access key ID.
      - The E(AWS_ACCESS_KEY_ID) environment variable may also be used.
      - The O(access_key) and O(profile) options are mutually exclusive.
    type: str
    aliases: [ aws_access_key_id, aws_access_key, ec2_access_key ]
  secret_key:
    description:
      - AWS secret access key.
      - The E(AWS_SECRET_ACCESS_KEY) environment variable may also be used.
      - The O(secret_key) and O(profile) options are mutually exclusive.
    type: str
    aliases: [ aws_secret_access_key, aws_secret_key ]
  session_token:
    description:
      - AWS STS session token for use with temporary credentials.
      - The E(AWS_SESSION_TOKEN) environment variable may also be used.
      - The O(session_token) and O(profile) options are mutually exclusive.
    type: str
    aliases: [ aws_session_token ]
  profile:
    description:
      - A named AWS profile to use for authentication.
      - The E(AWS_PROFILE) environment variable may also be used.
      - The O(profile) option is mutually exclusive with the O(access_key), O(secret_key)
        and O(session_token) options.
    type: str
    aliases: [ aws_profile ]
  validate_certs:
    description:
      - When set to V(false), SSL certificates are not validated for communication with the endpoint.
      - Setting O(validate_certs=false) is strongly discouraged; consider setting O(aws_ca_bundle) instead.
    type: bool
    default: true
  aws_ca_bundle:
    description:
      - The location of a CA bundle to use when validating SSL certificates.
      - The E(AWS_CA_BUNDLE) environment variable may also be used.
    type: path
notes:
  - Environment variables and AWS configuration files (C(~/.aws/credentials), C(~/.aws/config))
    are read on the target host, not on the controller.
  - Without explicit credentials, the AWS SDK's default chain applies (environment, profile,
    instance role).
requirements:
  - boto3
  - botocore
"""
