"""Prints a presigned URL (SigV4 in the query string, good for 60 seconds) for a GET of URL,
signed by botocore's query signer for service execute-api:

  python3 presign.py URL REGION KEY_ID SECRET
"""
import sys

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

url, region, key_id, secret = sys.argv[1:5]
req = AWSRequest(method="GET", url=url)
SigV4QueryAuth(Credentials(key_id, secret), "execute-api", region, expires=60).add_auth(req)
print(req.url)
