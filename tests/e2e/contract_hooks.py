"""schemathesis hooks for the contract fuzzing (tests/e2e/schemathesis.toml).

The local router (cargo lambda watch) answers 500 itself, before any function runs, to a
text or JSON body that is not UTF-8 (it puts the body into the API Gateway event as a string).
API Gateway hands such a body over base64-encoded and the functions refuse it with 400
(shared/src/http.rs has the test), so such bodies are left out here rather than reported as
the service's failure.
"""

import schemathesis


@schemathesis.hook
def filter_body(context, body):
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
