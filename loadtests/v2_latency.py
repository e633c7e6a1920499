"""Sequential KServe v2 latency per protocol with tritonclient: p50/p99 of N requests, one at a time.

    .venv/bin/python -m loadtests.v2_latency --http 127.0.0.1:3000 --grpc 127.0.0.1:8001 \\
        --model gan_generator --model resnet50 -n 50

Inputs are random arrays shaped from each model's metadata (batch 1, sequence 16); a few
warm-up requests per protocol are not counted.  Prints one JSON line per model and protocol.
Every call carries the API token where there is one (loadtests/auth.py).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from loadtests.auth import auth_headers, grpc_metadata

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def arrays_for(meta: dict, batch: int = 1, sequence: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for tensor in meta["inputs"]:
        shape = [batch if i == 0 else (sequence if int(d) == -1 else int(d)) for i, d in enumerate(tensor["shape"])]
        if tensor["datatype"] == "FP32":
            out[tensor["name"]] = rng.standard_normal(shape).astype(np.float32)
        elif tensor["name"] == "attention_mask":
            out[tensor["name"]] = np.ones(shape, np.int64)
        else:
            out[tensor["name"]] = np.zeros(shape, np.int64) if "type" in tensor["name"] else np.ones(shape, np.int64)
    return out


def measure(call, n: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        call()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)
    values = np.asarray(latencies)
    return {
        "n": n,
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "mean_ms": round(float(values.mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="127.0.0.1:3000")
    parser.add_argument("--grpc", default="127.0.0.1:8001")
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    if not (args.http.startswith(LOOPBACK) and args.grpc.startswith(LOOPBACK)):
        raise SystemExit("latency runs target loopback only")
    http = thttp.InferenceServerClient(args.http)
    grpc = tgrpc.InferenceServerClient(args.grpc)
    headers = auth_headers() or None
    metadata = dict(grpc_metadata()) or None  # gRPC metadata keys are lower case
    for model in args.model:
        arrays = arrays_for(http.get_model_metadata(model, headers=headers))

        def http_call(binary: bool, model: str = model, arrays: dict[str, np.ndarray] = arrays) -> None:
            inputs = []
            for name, array in arrays.items():
                tensor = thttp.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
                tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            http.infer(model, inputs, headers=headers)

        def grpc_call(model: str = model, arrays: dict[str, np.ndarray] = arrays) -> None:
            inputs = []
            for name, array in arrays.items():
                tensor = tgrpc.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            grpc.infer(model, inputs, headers=metadata)

        for protocol, call in (
            ("grpc", grpc_call),
            ("http-binary", lambda: http_call(True)),
            ("http-json", lambda: http_call(False)),
        ):
            print(json.dumps({"model": model, "protocol": protocol, **measure(call, args.n)}), flush=True)


if __name__ == "__main__":
    main()
