"""KServe v2 / Open Inference Protocol over HTTP (`http.py`) and gRPC (`grpc_server.py`).

Three layers, as MLServer keeps them: `tensors` converts wire tensors (JSON, binary extension,
gRPC raw and typed contents) to and from numpy with no knowledge of models; `models` checks
tensors strictly against a model's metadata and runs them through the shared `ModelRuntime`;
the two protocol modules only move envelopes and map errors to status codes.
"""
