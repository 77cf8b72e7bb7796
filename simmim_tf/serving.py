"""Clients for a model served by TensorFlow Serving: gRPC and REST.

`GrpcClient` calls the PredictionService (`Predict`, `GetModelMetadata`) from
`tensorflow-serving-api`; `RestClient` calls the REST API
(`/v1/models/NAME[/versions/N]:predict` and `/metadata`), in the columnar
(`inputs`) or row (`instances`) format, bytes as `{"b64": ...}`. Both take
and return numpy arrays (strings as `bytes`), retry while the server is
UNAVAILABLE (starting, restarting) until the call's deadline, and raise
`ServingError`, which names the model, the version and, where it is known,
the input.

Example:
```python
client = GrpcClient("localhost:8500", "emoji")
client.predict({"text": ["I could eat a whole pizza"], "k": 5}, "search")["names"]
```
"""

from __future__ import annotations

import abc
import base64
import concurrent.futures
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

DEFAULT_SIGNATURE = "serving_default"


class ServingError(RuntimeError):
    """A served model refused or failed a request.

    Attributes:
        model: str. The model name.
        version: int or None (the latest).
        code: str. The gRPC status name (REST errors are mapped to one).
        input_name: str or None. The input at fault, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        version: int | None,
        code: str,
        input_name: str | None = None,
    ):
        where = f"model {model!r} version {version or 'latest'}"
        if input_name is not None:
            where += f", input {input_name!r}"
        super().__init__(f"{where}: {code}: {message}")
        self.model = model
        self.version = version
        self.code = code
        self.input_name = input_name


class _Retryable(Exception):
    """The server is not answering yet; the call may be repeated."""


class ServingClient(abc.ABC):
    """What both clients share: signatures, input checks, retries, errors.

    Args:
        server: str. `host:port` of the server's gRPC or REST port.
        model: str. The model name in the server's config.
        version: int or None. A version number; None is the latest loaded.
        deadline: float. Seconds a call may take, retries included.
        backoff: float. First wait between retries (doubles, up to 1 s).
    """

    def __init__(
        self,
        server: str,
        model: str,
        *,
        version: int | None = None,
        deadline: float = 10.0,
        backoff: float = 0.05,
    ):
        self.server = server
        self.model = model
        self.version = version
        self.deadline = deadline
        self.backoff = backoff
        self._signatures: dict | None = None

    def signatures(self) -> dict[str, dict[str, dict[str, str]]]:
        """`{signature: {"inputs": {name: dtype}, "outputs": {name: dtype}}}`.

        Read once from the server's model metadata, then cached.
        """
        if self._signatures is None:
            signature_map = self._call(self._metadata)
            self._signatures = {
                name: {
                    side: {
                        key: tf.dtypes.as_dtype(info.dtype).name
                        for key, info in getattr(signature, side).items()
                    }
                    for side in ("inputs", "outputs")
                }
                for name, signature in signature_map.signature_def.items()
                if name != "__saved_model_init_op"
            }
        return self._signatures

    def predict(
        self, inputs: Mapping[str, Any], signature: str = DEFAULT_SIGNATURE
    ) -> dict[str, np.ndarray]:
        """Run `signature` on `inputs` (name -> array, list or scalar).

        Returns every output as a numpy array; strings come back as `bytes`.
        Raises `ServingError` for an unknown signature, a missing or
        unexpected input, or anything the server refuses.
        """
        signatures = self.signatures()
        if signature not in signatures:
            raise self._error(
                f"no signature {signature!r}; the model has {sorted(signatures)}",
                "INVALID_ARGUMENT",
            )
        expected = signatures[signature]["inputs"]
        for name in sorted(set(inputs) ^ set(expected)):
            problem = "unexpected" if name in inputs else "missing"
            raise self._error(
                f"{problem} input for signature {signature!r}, which takes "
                f"{sorted(expected)}",
                "INVALID_ARGUMENT",
                name,
            )
        arrays = {
            name: _as_array(value, expected[name], name, self)
            for name, value in inputs.items()
        }
        return self._call(lambda timeout: self._predict(arrays, signature, timeout))

    def _call(self, request: Callable[[float], Any]) -> Any:
        """`request(timeout)` until it answers, retrying `_Retryable` to the deadline."""
        end = time.monotonic() + self.deadline
        wait = self.backoff
        while True:
            try:
                return request(max(end - time.monotonic(), 0.001))
            except _Retryable as error:
                if time.monotonic() + wait >= end:
                    raise self._error(
                        f"server {self.server} unavailable for {self.deadline:g} s "
                        f"(last: {error})",
                        "UNAVAILABLE",
                    ) from None
                time.sleep(wait)
                wait = min(2 * wait, 1.0)

    def _error(self, message: str, code: str, input_name: str | None = None):
        return ServingError(
            message,
            model=self.model,
            version=self.version,
            code=code,
            input_name=input_name,
        )

    @abc.abstractmethod
    def _metadata(self, timeout: float):
        """The model's `SignatureDefMap`."""

    @abc.abstractmethod
    def _predict(self, arrays: dict, signature: str, timeout: float) -> dict:
        """One Predict call; raise `_Retryable` if the server is unavailable."""


def _as_array(value: Any, dtype: str, name: str, client: ServingClient) -> np.ndarray:
    """`value` as an array of the signature's dtype; str becomes UTF-8 bytes."""
    if dtype == "string":
        array = np.asarray(value, dtype=object)
        if not all(isinstance(item, (str, bytes)) for item in array.flat):
            raise client._error(
                "expected strings or bytes, got "
                + ", ".join(sorted({type(item).__name__ for item in array.flat})),
                "INVALID_ARGUMENT",
                name,
            )
        return np.vectorize(_utf8, otypes=[object])(array) if array.size else array
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "SU":
        raise client._error(
            f"expected {dtype} values, got {array.dtype.name}", "INVALID_ARGUMENT", name
        )
    return array.astype(dtype)


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class GrpcClient(ServingClient):
    """TensorFlow Serving's gRPC PredictionService (default port 8500).

    Example:
    ```python
    client = GrpcClient("localhost:8500", "emoji-classes")
    client.predict({"image_bytes": [open("x.png", "rb").read()]})["class_name"]
    ```
    """

    def __init__(self, server: str, model: str, **kwargs):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        super().__init__(server, model, **kwargs)
        self._grpc = grpc
        # Images are larger than gRPC's 4 MB default message limit allows.
        self._channel = grpc.insecure_channel(
            server,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _spec(self, spec, signature: str = "") -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        if signature:
            spec.signature_name = signature

    def _rpc(self, method, request, timeout: float):
        try:
            return method(request, timeout=timeout)
        except self._grpc.RpcError as error:
            code = error.code()
            if code == self._grpc.StatusCode.UNAVAILABLE:
                raise _Retryable(error.details()) from None
            raise self._error(error.details(), code.name) from None

    def _metadata(self, timeout: float):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._rpc(self._stub.GetModelMetadata, request, timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def _predict(self, arrays: dict, signature: str, timeout: float) -> dict:
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        for name, array in arrays.items():
            dtype = tf.string if array.dtype == object else None  # even when empty
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
        response = self._rpc(self._stub.Predict, request, timeout)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


class RestClient(ServingClient):
    """TensorFlow Serving's REST API (default port 8501).

    Args:
        row_format: bool. Send `instances` (one JSON object per example)
            instead of the columnar `inputs`; every input then needs the
            same batch size, so scalar inputs (`k`) need the columnar form.

    Example:
    ```python
    client = RestClient("localhost:8501", "emoji")
    client.predict({"text": ["pizza"], "k": 5}, "search")["ids"]
    ```
    """

    def __init__(self, server: str, model: str, *, row_format: bool = False, **kwargs):
        super().__init__(server, model, **kwargs)
        self.row_format = row_format

    def _url(self, suffix: str) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"http://{self.server}/v1/models/{self.model}{version}{suffix}"

    def _request(self, url: str, body: dict | None, timeout: float) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            if error.code == 503:
                raise _Retryable(text) from None
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text or error.reason
            raise self._error(message, _HTTP_CODES.get(error.code, "UNKNOWN")) from None
        except (ConnectionError, http.client.RemoteDisconnected) as error:
            raise _Retryable(str(error)) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, ConnectionError):
                raise _Retryable(str(error.reason)) from None
            raise self._error(str(error.reason), "UNAVAILABLE") from None
        except TimeoutError:
            raise self._error(
                f"no answer within the {self.deadline:g} s deadline", "DEADLINE_EXCEEDED"
            ) from None

    def _metadata(self, timeout: float):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = self._request(self._url("/metadata"), None, timeout)
        return json_format.ParseDict(
            response["metadata"]["signature_def"],
            get_model_metadata_pb2.SignatureDefMap(),
            ignore_unknown_fields=True,
        )

    def _predict(self, arrays: dict, signature: str, timeout: float) -> dict:
        columns = {name: _to_json(array) for name, array in arrays.items()}
        body: dict[str, Any] = {"signature_name": signature}
        if self.row_format:
            sizes = {
                name: len(array) if array.ndim else 0 for name, array in arrays.items()
            }
            rows = max(sizes.values(), default=0)
            for name, size in sizes.items():
                if arrays[name].ndim == 0 or size != rows:
                    raise self._error(
                        "the row format needs every input batched to one size; "
                        f"got sizes {sizes}: use the columnar format",
                        "INVALID_ARGUMENT",
                        name,
                    )
            body["instances"] = [
                {name: column[row] for name, column in columns.items()}
                for row in range(rows)
            ]
        else:
            body["inputs"] = columns
        response = self._request(self._url(":predict"), body, timeout)
        outputs = self.signatures()[signature]["outputs"]
        if "predictions" in response:
            rows = response["predictions"]
            if len(outputs) == 1:
                rows = [{next(iter(outputs)): row} for row in rows]
            columns = {name: [row[name] for row in rows] for name in outputs}
        else:
            columns = response["outputs"]
            if len(outputs) == 1:  # TF Serving omits the name of a single output
                columns = {next(iter(outputs)): columns}
        return {name: _from_json(columns[name], outputs[name]) for name in outputs}


# TF Serving maps its status codes to these HTTP statuses.
_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _to_json(array: np.ndarray) -> Any:
    """Nested lists for JSON; bytes as `{"b64": ...}`."""
    if array.dtype == object:
        encode = np.vectorize(
            lambda value: {"b64": base64.b64encode(value).decode("ascii")},
            otypes=[object],
        )
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _from_json(value: Any, dtype: str) -> np.ndarray:
    """A JSON output as an array of the signature's dtype; strings as bytes."""
    if dtype != "string":
        return np.asarray(value, dtype=dtype)

    def decode(item):
        if isinstance(item, dict):
            return base64.b64decode(item["b64"])
        return item.encode("utf-8")

    array = np.asarray(value, dtype=object)
    return np.vectorize(decode, otypes=[object])(array) if array.size else array


def connect(
    server: str, model: str, *, protocol: str = "grpc", **kwargs
) -> ServingClient:
    """A `GrpcClient` (`protocol="grpc"`) or `RestClient` (`"rest"`)."""
    clients = {"grpc": GrpcClient, "rest": RestClient}
    if protocol not in clients:
        raise ValueError(f"Protocol {protocol!r} must be one of {sorted(clients)}.")
    return clients[protocol](server, model, **kwargs)


# Which signature answers a query, when several take its inputs.
_PREFERRED = ("serving_default", "search", "match")


def query(
    client: ServingClient,
    *,
    image: bytes | None = None,
    text: str | None = None,
    signature: str | None = None,
    k: int = 5,
) -> tuple[str, dict[str, np.ndarray]]:
    """Send one image and/or text to the signature that takes exactly those.

    With a text alone a retrieval model searches (top `k`); with an image and
    a text it matches them; a classifier classifies. Returns the signature
    used and its outputs.
    """
    given = {}
    if image is not None:
        given["image_bytes"] = [image]
    if text is not None:
        given["text"] = [text]
    if not given:
        raise ValueError("A query needs an image, a text or both.")
    signatures = client.signatures()
    if signature is None:
        takers = [
            name
            for name, spec in signatures.items()
            if set(spec["inputs"]) - {"k"} == set(given)
        ]
        if not takers:
            raise client._error(
                f"no signature takes exactly {sorted(given)}; the model's "
                f"signatures take {[sorted(s['inputs']) for s in signatures.values()]}",
                "INVALID_ARGUMENT",
            )
        ranked = sorted(takers, key=lambda n: (_PREFERRED + (n,)).index(n))
        signature = ranked[0]
    if "k" in signatures.get(signature, {}).get("inputs", {}):
        given["k"] = np.int32(k)
    return signature, client.predict(given, signature)


def run_load(
    request: Callable[[int], Any], requests: int, concurrency: int
) -> dict[str, Any]:
    """Send `requests` calls of `request(i)` from `concurrency` threads.

    Returns `{"latency_s": sorted per-request seconds, "results": answers by
    i, "errors": {i: exception}, "wall_s": seconds}`; nothing is dropped
    silently: every `i` is in `results` or `errors`.
    """

    def timed(index: int):
        start = time.perf_counter()
        result = request(index)
        return time.perf_counter() - start, result

    latencies, results, errors = [], {}, {}
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = {pool.submit(timed, index): index for index in range(requests)}
        for future in concurrent.futures.as_completed(futures):
            index = futures[future]
            try:
                latency, results[index] = future.result()
                latencies.append(latency)
            except Exception as error:  # reported, not raised: the run goes on
                errors[index] = error
    return {
        "latency_s": sorted(latencies),
        "results": results,
        "errors": errors,
        "wall_s": time.perf_counter() - start,
    }
