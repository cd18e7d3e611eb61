"""The local stack's AWS identity: the one region and account every local ARN, URL and client uses.

Apart from relay_local.stack, which loads moto: a function's execution environment
(relay_local.worker) names them too, and must start as lightly as Lambda's own runtime.
"""

REGION = "ap-south-1"
ACCOUNT_ID = "123456789012"
