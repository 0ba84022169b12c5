"""Calls a WebSocket API's @connections on its own domain with botocore's
ApiGatewayManagementApi client (the SDK backends use against Amazon's), SigV4-signed; prints
one JSON object: case name -> what the SDK returned or raised.

  python3 manage_client.py ENDPOINT REGION KEY_ID SECRET CONNECTION_ID OTHER_ID OTHER_SECRET
"""
import json
import sys

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, region, key_id, secret, conn, other_id, other_secret = sys.argv[1:8]


def client(kid, ksecret):
    return botocore.session.get_session().create_client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=kid,
        aws_secret_access_key=ksecret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


def call(fn, **kw):
    try:
        r = fn(**kw)
        meta = r.pop("ResponseMetadata", {})
        return {"ok": True, "status": meta.get("HTTPStatusCode"), "result": r}
    except ClientError as e:
        return {
            "ok": False,
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "code": e.response["Error"]["Code"],
            "message": e.response["Error"].get("Message", ""),
        }


ops = client(key_id, secret)
other = client(other_id, other_secret)
out = {}
out["post"] = call(ops.post_to_connection, ConnectionId=conn, Data=b'{"hello":"from boto"}')
out["get"] = call(ops.get_connection, ConnectionId=conn)
out["denied"] = call(other.post_to_connection, ConnectionId=conn, Data=b"nope")
out["too_large"] = call(ops.post_to_connection, ConnectionId=conn, Data=b"a" * (128 * 1024 + 1))
out["delete"] = call(ops.delete_connection, ConnectionId=conn)
out["gone"] = call(ops.post_to_connection, ConnectionId="AAAAAAAAAAAAAAAA", Data=b"late")
print(json.dumps(out, default=str))
