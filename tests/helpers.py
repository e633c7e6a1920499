"""The server helpers the tests share with the benchmarks."""

from loadtests.servers import BIN, ROOT, Server, free_port, http_json, running_server

__all__ = ["BIN", "ROOT", "Server", "free_port", "http_json", "running_server"]
