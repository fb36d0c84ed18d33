# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options of rtx.dr.plugins.module_utils.postgres.postgres_common_argument_spec().
    # Keep both in step: names, aliases, defaults, types.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server.
      - When empty, libpq defaults apply (the E(PGHOST) environment variable, else the
        default Unix socket), unless O(login_unix_socket) is set.
      - If you have connection issues when using C(localhost), try C(127.0.0.1) instead.
    type: str
  login_port:
    description:
      - TCP port of the PostgreSQL server (also used to name the Unix socket file).
    type: int
    default: 5432
  login_user:
    description:
      - The role this module logs in as.
    type: str
    default: postgres
  login_password:
    description:
      - The password of O(login_user).
      - The E(PGPASSWORD) environment variable on the target host is used when this is not set;
        without either, libpq still reads C(~/.pgpass).
      - It is passed to the driver as a separate keyword, never as part of a connection string.
    type: str
  login_db:
    description:
      - The database to connect to.
    type: str
    default: postgres
    aliases: [ db ]
  login_unix_socket:
    description:
      - Directory of the PostgreSQL Unix domain socket, for example C(/var/run/postgresql).
      - Used instead of O(login_host) when O(login_host) is empty or C(localhost).
    type: str
  ssl_mode:
    description:
      - Whether or with what priority a secure SSL TCP/IP connection is negotiated with the server.
      - See U(https://www.postgresql.org/docs/current/libpq-ssl.html) for the meaning of each mode.
      - The default V(prefer) matches the libpq default.
    type: str
    default: prefer
    choices: [ allow, disable, prefer, require, verify-ca, verify-full ]
  ca_cert:
    description:
      - Path of a file with the SSL certificate authority (CA) certificate(s) the server certificate
        must be signed by (libpq C(sslrootcert)).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established; V(0) waits forever.
    type: int
    default: 10
notes:
  - The default authentication assumes that the module runs as, or becomes, the C(postgres) operating
    system user on the database host (peer authentication over the Unix socket).
  - This module uses C(psycopg) (version 3) when it is installed on the target host, else C(psycopg2).
    On Debian/Ubuntu install the C(python3-psycopg2) package, elsewhere C(pip install psycopg2-binary).
requirements:
  - psycopg2 or psycopg (3)
"""
