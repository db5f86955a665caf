"""moto's server answering one request at a time, as ``python -m tests.moto_serial PORT``.

S3 makes a conditional write (If-None-Match, If-Match) atomic; moto's threaded server checks
the condition and stores the object in two steps, so two processes racing for one lease could
both win there, and not on S3. Served one at a time, the check and the write are one step."""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
               threaded=False, use_reloader=False, request_handler=MotoRequestHandler)
