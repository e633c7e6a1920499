"""KServe's own v2 clients against zooserve; run by tests/test_kserve_client.py in a venv holding
only `kserve` (its pins clash with the project's, its protobufs with tritonclient's).

    python kserve_v2.py HTTP_URL GRPC_HOST:PORT MODEL INPUT SHAPE_JSON SEED
Prints one JSON line: per protocol, each output's name, shape and values.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(model: str, name: str, data: np.ndarray, binary: bool) -> InferRequest:
    tensor = InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return InferRequest(model_name=model, infer_inputs=[tensor])


def outputs(response: object) -> list[dict[str, object]]:
    return [
        {"name": out.name, "shape": list(out.shape), "data": out.as_numpy().astype(np.float64).ravel().tolist()}
        for out in response.outputs  # type: ignore[attr-defined]
    ]


async def main(url: str, grpc_url: str, model: str, name: str, shape: list[int], seed: int) -> None:
    data = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    grpc = InferenceGRPCClient(grpc_url, timeout=60)
    try:
        answer = {
            "rest_ready": await rest.is_server_ready(url),
            "rest_model_ready": await rest.is_model_ready(url, model),
            "rest_json": outputs(await rest.infer(url, request(model, name, data, False), model_name=model)),
            "rest_binary": outputs(await rest.infer(url, request(model, name, data, True), model_name=model)),
            "grpc_ready": await grpc.is_server_ready(),
            "grpc": outputs(await grpc.infer(request(model, name, data, False))),
        }
    finally:
        await rest.close()
        await grpc.close()
    print(json.dumps(answer))


if __name__ == "__main__":
    url, grpc_url, model, name, shape, seed = sys.argv[1:7]
    asyncio.run(main(url, grpc_url, model, name, json.loads(shape), int(seed)))
