# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small in-memory stand-in for the AWX REST API (/api/v2/), enough for the awx.awx modules that
playbooks/awx_configure.yml uses: list with filters, create, read, update, survey specs and associations.

It listens on 127.0.0.1 only, keeps what it is sent, and answers lookups from that; the objects that are
created by hand on a real controller (credentials) are seeded. It knows nothing of AWX's validation: the
tests check that separately (surveys, RRULEs)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ASSOCIATIONS = {"credentials", "instance_groups", "labels", "notification_templates_started",
                "notification_templates_success", "notification_templates_error", "galaxy_credentials"}
# Read-only fields the modules read back from what they created.
DEFAULTS = {"projects": {"scm_revision": "0" * 40, "status": "successful"}}
UNIFIED = ("job_templates", "workflow_job_templates", "projects", "inventory_sources")


class FakeAWX:
    def __init__(self, seed=None):
        self.objects = {}
        self.surveys = {}
        self.links = {}
        self.requests = []
        self.next_id = 1
        for endpoint, items in (seed or {}).items():
            for item in items:
                self._create(endpoint, dict(item))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def named(self, endpoint, name):
        return next((o for o in self.objects.get(endpoint, {}).values() if o.get("name") == name), None)

    def _create(self, endpoint, body):
        obj = dict(DEFAULTS.get(endpoint, {}), **body)
        url = "/api/v2/%s/%d/" % (endpoint, self.next_id)
        related = {sub: "%s%s/" % (url, sub) for sub in sorted(ASSOCIATIONS | {"survey_spec", "schedules"})}
        obj.update(id=self.next_id, type=endpoint.rstrip("s"), related=related, summary_fields={}, url=url)
        self.next_id += 1
        self.objects.setdefault(endpoint, {})[obj["id"]] = obj
        return obj

    def _list(self, endpoint, query):
        pools = UNIFIED if endpoint == "unified_job_templates" else (endpoint,)
        found = [o for pool in pools for o in self.objects.get(pool, {}).values()]
        either = {k[4:]: v for k, v in query.items() if k.startswith("or__")}
        for key, value in query.items():
            if key.startswith("or__") or key in ("page_size", "page", "order_by"):
                continue
            found = [o for o in found if str(o.get(key)) == value]
        if either:
            found = [o for o in found if any(str(o.get(k)) == v for k, v in either.items())]
        return {"count": len(found), "next": None, "previous": None, "results": found}

    def handle(self, method, path, query, body):
        self.requests.append((method, path, query, body))
        parts = [p for p in path.split("/") if p][2:]  # after api/v2
        if not parts or parts[0] in ("ping", "config", "me"):
            return 200, {"version": "24.6.1", "results": [{"id": 1, "username": "admin"}], "count": 1}
        endpoint = parts[0]
        if len(parts) == 1:
            if method == "GET":
                return 200, self._list(endpoint, query)
            if method == "POST":
                return 201, self._create(endpoint, body)
        pool = self.objects.get(endpoint, {})
        if endpoint == "unified_job_templates" or not parts[1].isdigit():
            return 404, {"detail": "Not found."}
        oid = int(parts[1])
        if oid not in pool:
            return 404, {"detail": "Not found."}
        if len(parts) == 2:
            if method == "GET":
                return 200, pool[oid]
            if method in ("PATCH", "PUT"):
                pool[oid].update(body)
                return 200, pool[oid]
            if method == "DELETE":
                del pool[oid]
                return 204, None
        sub = parts[2]
        if sub == "survey_spec":
            if method == "GET":
                return 200, self.surveys.get((endpoint, oid), {})
            self.surveys[(endpoint, oid)] = body
            return 200, body
        if sub in ASSOCIATIONS:
            linked = self.links.setdefault((endpoint, oid, sub), [])
            if method == "GET":
                results = [o for ep in self.objects for o in self.objects[ep].values()
                           if o["id"] in linked and ep in (sub, "credentials", "labels", "instance_groups")]
                return 200, {"count": len(results), "next": None, "results": results}
            if body.get("disassociate"):
                linked.remove(body["id"])
            elif body["id"] not in linked:
                linked.append(body["id"])
            return 204, None
        if sub == "schedules":
            if method == "GET":
                return 200, self._list("schedules", dict(query, unified_job_template=str(oid)))
            return 201, self._create("schedules", dict(body, unified_job_template=oid))
        return 404, {"detail": "Not found."}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                status, payload = fake.handle(self.command, url.path, dict(parse_qsl(url.query)), body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-API-Product-Name", "AWX")
                self.send_header("X-API-Product-Version", "24.6.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815 pylint: disable=invalid-name

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

        return Handler
