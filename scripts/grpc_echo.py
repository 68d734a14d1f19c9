#!/usr/bin/env python3
"""gRPC echo service: the tiny service of the Portcullis gRPC example and tests.

Raw bytes as requests and responses (no protobuf schema needed), three methods:

- ``/portcullis.demo.Echo/Say`` (unary): answers JSON, ``{"message": <request as text>,
  "metadata": {name: value}}``, where ``metadata`` is the call's invocation metadata as the
  service received it (what the gateway's handoff set: x-consumer-id, x-request-id, ...).
  Each ``x-echo-metadata: name=value`` the call carries is sent back as initial (response)
  metadata ``name: value``.
- ``/portcullis.demo.Echo/Count`` (server streaming): the request is a number N (1-100); answers
  the messages ``1`` ... ``N``, 50 ms apart.
- ``/portcullis.demo.Echo/Collect`` (client streaming): answers the request messages joined
  with ``,``.

    python3 scripts/grpc_echo.py --port 50051

Needs grpcio (Debian: python3-grpcio). SIGTERM and SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

SERVICE = "portcullis.demo.Echo"
METHOD = "Say"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


def say(request: bytes, context: grpc.ServicerContext) -> bytes:
    metadata = {item.key: item.value for item in context.invocation_metadata()
                if isinstance(item.value, str)}
    echoed = [tuple(item.value.split("=", 1)) for item in context.invocation_metadata()
              if item.key == "x-echo-metadata" and "=" in item.value]
    if echoed:
        context.send_initial_metadata(echoed)
    return json.dumps({"message": request.decode("utf-8", "replace"), "metadata": metadata}).encode("utf-8")


def count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    try:
        n = int(request)
    except ValueError:
        n = 0
    if not 1 <= n <= 100:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request must be a number from 1 to 100")
    for i in range(1, n + 1):
        if i > 1:
            time.sleep(0.05)
        yield str(i).encode("ascii")


def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return b",".join(requests)


def serve(host: str, port: int) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
    })
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"grpc echo listening on {host}:{bound}", file=sys.stderr, flush=True)
    stopped.wait()
    server.stop(grace=1).wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
