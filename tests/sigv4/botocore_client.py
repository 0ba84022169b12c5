"""Signs requests with botocore's SigV4Auth (the signer every AWS SDK for Python uses) and
sends them to the gateway under test; prints one JSON object: case name -> {status, body}.

  python3 botocore_client.py BASE_URL REGION KEY_ID SECRET READER_ID READER_SECRET

Requests go out exactly as signed (http.client, header by header), so repeated and odd-case
headers reach the gateway as the signer saw them.
"""
import datetime
import http.client
import json
import sys
import urllib.parse

import botocore.auth
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

base, region, key_id, secret, reader_id, reader_secret = sys.argv[1:7]
host = urllib.parse.urlsplit(base).netloc


class UnsignedPayload(SigV4Auth):
    def payload(self, request):
        return "UNSIGNED-PAYLOAD"


class Presigned(SigV4QueryAuth):
    """A presigned URL good for 60 seconds (its payload hash is the body's)."""

    def __init__(self, creds, service, region):
        super().__init__(creds, service, region, expires=60)


class PresignedHour(SigV4QueryAuth):
    def __init__(self, creds, service, region):
        super().__init__(creds, service, region, expires=3600)


class PresignedUnsigned(Presigned):
    """As S3's presigned URLs and most browser signers: UNSIGNED-PAYLOAD."""

    def payload(self, request):
        return "UNSIGNED-PAYLOAD"


def signed(method, path, *, params=None, body=None, headers=(), creds=(key_id, secret), signer=SigV4Auth, after=None):
    url = base + path
    if params:
        url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    req = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        req.headers[name] = value  # appends: a name given twice is sent twice
    signer(Credentials(*creds), "execute-api", region).add_auth(req)
    if after:
        after(req)
    return req


def send(req, absolute=None):
    """`absolute`: a host to name in an absolute-form target (the signed Host line kept)."""
    parts = urllib.parse.urlsplit(req.url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    if absolute:
        target = f"http://{absolute}{target}"
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.putrequest(req.method, target, skip_host=True, skip_accept_encoding=True)
    if "Host" not in req.headers:
        # botocore signs the URL's host; the HTTP client sends it (as urllib3 would).
        conn.putheader("Host", host)
    for name, value in req.headers.items():
        conn.putheader(name, value)
    body = req.body or b""
    if isinstance(body, str):
        body = body.encode()
    if body or req.method in ("POST", "PUT", "PATCH"):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    out = {"status": r.status, "body": r.read().decode("utf-8", "replace")}
    conn.close()
    return out


results = {}
results["get_query"] = send(signed("GET", "/pets", params={"limit": "10", "q": "a b/c", "empty": ""}))
results["post_json"] = send(signed("POST", "/pets", body=json.dumps({"name": "Rex"}), headers=[("Content-Type", "application/json")]))
results["odd_case_repeated_headers"] = send(signed("GET", "/pets", headers=[
    ("X-Custom-THING", "  spaced   value "), ("x-multi", "one"), ("X-Multi", "two")]))
# Signed as botocore normalizes it (/pets/1), sent as written.
results["double_slashes"] = send(signed("GET", "//pets//1"))
results["extension_method"] = send(signed("PROPFIND", "/pets/7"))
results["unicode_path"] = send(signed("GET", urllib.parse.quote("/pets/café ☃")))
results["unsigned_payload"] = send(signed("PUT", "/pets/7", body="anything", headers=[("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")], signer=UnsignedPayload))


def tamper(req):
    req.headers.replace_header("X-Custom-Thing", "changed")


results["tampered_header"] = send(signed("GET", "/pets", headers=[("X-Custom-Thing", "original")], after=tamper))


def tamper_body(req):
    req.data = b'{"name":"Evil"}'  # same length, other bytes


results["tampered_body"] = send(signed("POST", "/pets", body='{"name":"Rex"}', after=tamper_body))
results["wrong_secret"] = send(signed("GET", "/pets", creds=(key_id, secret[::-1])))
results["unknown_key"] = send(signed("GET", "/pets", creds=("AKIAUNKNOWN000000000", secret)))
results["reader_get"] = send(signed("GET", "/pets/1", creds=(reader_id, reader_secret)))
results["reader_post"] = send(signed("POST", "/pets", body="{}", creds=(reader_id, reader_secret)))

# Signed with a Date header in place of X-Amz-Date (botocore uses Date when the request has one).
results["date_header"] = send(signed("GET", "/pets", headers=[("Date", "now")]))


def second_authorization(req):
    req.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKIAX/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00"


results["two_authorizations"] = send(signed("GET", "/pets", after=second_authorization))

real = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: datetime.datetime(2015, 8, 30, 12, 36, 0)
results["expired"] = send(signed("GET", "/pets"))
results["presigned_expired"] = send(signed("GET", "/pets", signer=Presigned))
# Signed ten minutes ago: past the five minutes of a header signature, within the hour the
# URL says it is good for.
ten_ago = real() - datetime.timedelta(minutes=10)
botocore.auth.get_current_datetime = lambda: ten_ago
results["presigned_ten_minutes_ago"] = send(signed("GET", "/pets", signer=PresignedHour))
results["presigned_ten_minutes_ago_60s"] = send(signed("GET", "/pets", signer=Presigned))
botocore.auth.get_current_datetime = real

# Presigned URLs: SigV4 in the query string (X-Amz-Algorithm, -Credential, -Date, -Expires,
# -SignedHeaders, -Signature), as browsers open IAM-signed WebSocket connections.
results["presigned_get"] = send(signed("GET", "/pets", params={"limit": "10", "q": "a b"}, signer=Presigned))
# (botocore's query signer moves a body into the query string, as AWS's query APIs take it:
# bodies are added after signing.)


def body_anything(req):
    req.data = b"anything"


results["presigned_unsigned_payload"] = send(signed("PUT", "/pets/7", signer=PresignedUnsigned, after=body_anything))
results["presigned_post"] = send(signed("POST", "/pets", signer=Presigned))
results["presigned_tampered_body"] = send(signed("POST", "/pets", signer=Presigned, after=body_anything))
results["presigned_reader_post"] = send(signed("POST", "/pets", creds=(reader_id, reader_secret), signer=Presigned))


def tamper_query(req):
    req.url = req.url.replace("limit=10", "limit=99")


results["presigned_tampered_query"] = send(signed("GET", "/pets", params={"limit": "10"}, signer=Presigned, after=tamper_query))


def add_authorization(req):
    req.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKIAX/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00"


results["presigned_and_header"] = send(signed("GET", "/pets", signer=Presigned, after=add_authorization))


def drop_signed_headers(req):
    parts = urllib.parse.urlsplit(req.url)
    query = "&".join(p for p in parts.query.split("&") if not p.startswith("X-Amz-SignedHeaders="))
    req.url = urllib.parse.urlunsplit(parts._replace(query=query))


results["presigned_missing_parameter"] = send(signed("GET", "/pets", signer=Presigned, after=drop_signed_headers))

# An absolute-form target names the host the request is routed by (RFC 9112 3.2.2): the
# signature must be for that host, not for a Host line naming another.
results["absolute_same_host"] = send(signed("GET", "/pets/1"), absolute=host)
results["absolute_other_host"] = send(signed("GET", "/pets/1"), absolute="other.test")
results["presigned_absolute_other_host"] = send(signed("GET", "/pets/1", signer=PresignedHour), absolute="other.test")

print(json.dumps(results))
