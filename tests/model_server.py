"""A stand-in for `tensorflow_model_server`, for the tests only (not a product).

`tensorflow_model_server` is in no package registry this project can install
from, so the serving tests run this instead, unless the real binary is on
PATH. It takes the real server's flags (`--port`, `--rest_api_port`,
`--model_config_file`, `--file_system_poll_wait_seconds`), speaks its wire
protocols on loopback (gRPC PredictionService `Predict` / `GetModelMetadata`
from tensorflow-serving-api's protos; REST `:predict` in row and columnar
form, `/metadata`, `{"error": ...}` bodies) and, like its default version
policy, serves the latest version of each model, picking up a new version
folder when it appears. It imports only TensorFlow, TF Text and the serving
protos, never simmim_tf: what it serves is the SavedModel alone.

    python tests/model_server.py --port 8500 --rest_api_port 8501 \
        --model_config_file savedmodels/models.config
"""

import argparse
import base64
import json
import pathlib
import re
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the models use)
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

# TF error codes are gRPC's; TF Serving's REST API maps them to HTTP statuses.
GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ServingFailure(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Servable:
    """One loaded version: its signatures and their `SignatureDef`s."""

    def __init__(self, path: pathlib.Path):
        self.version = int(path.name)
        self.model = tf.saved_model.load(str(path))
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        self.signature_defs = {
            name: definition
            for name, definition in proto.meta_graphs[0].signature_def.items()
            if name != "__saved_model_init_op"
        }

    def predict(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        if signature not in self.signature_defs:
            raise ServingFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature name: "{signature}" not found in signature def',
            )
        expected = self.signature_defs[signature].inputs
        for name in sorted(set(inputs) ^ set(expected)):
            problem = "unexpected" if name in inputs else "missing"
            raise ServingFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' is {problem}; signature {signature} takes "
                f"{sorted(expected)}",
            )
        tensors = {}
        for name, value in inputs.items():
            dtype = tf.dtypes.as_dtype(expected[name].dtype)
            if value.dtype != dtype:
                raise ServingFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{name}' expects {dtype.name}, got {value.dtype.name}",
                )
            tensors[name] = value
        try:
            outputs = self.model.signatures[signature](**tensors)
        except tf.errors.OpError as error:
            raise ServingFailure(GRPC_CODES[error.error_code], error.message) from None
        except (TypeError, ValueError) as error:
            raise ServingFailure(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        return {name: value.numpy() for name, value in outputs.items()}


class Models:
    """The config's models, each at its latest version; a thread polls for new ones."""

    def __init__(self, config_file: str, poll_seconds: float):
        config = text_format.Parse(
            pathlib.Path(config_file).read_text(),
            model_server_config_pb2.ModelServerConfig(),
        )
        self.base_paths = {
            entry.name: pathlib.Path(entry.base_path)
            for entry in config.model_config_list.config
        }
        self.servables: dict[str, Servable] = {}
        self.poll()
        threading.Thread(target=self._watch, args=(poll_seconds,), daemon=True).start()

    def poll(self) -> None:
        for name, base in self.base_paths.items():
            versions = [
                int(path.name)
                for path in base.glob("*")
                if path.name.isdigit() and (path / "saved_model.pb").is_file()
            ]
            current = self.servables.get(name)
            if versions and (current is None or max(versions) > current.version):
                self.servables[name] = Servable(base / str(max(versions)))

    def _watch(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            self.poll()

    def get(self, name: str, version: int | None) -> Servable:
        servable = self.servables.get(name)
        if servable is None or version not in (None, servable.version):
            request = f"Specific({name}, {version})" if version else f"Latest({name})"
            raise ServingFailure(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}"
            )
        return servable


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: Models):
        self.models = models

    def _servable(self, spec, context) -> Servable:
        version = spec.version.value if spec.HasField("version") else None
        try:
            return self.models.get(spec.name, version)
        except ServingFailure as failure:
            context.abort(failure.code, failure.message)

    def Predict(self, request, context):
        servable = self._servable(request.model_spec, context)
        signature = request.model_spec.signature_name or "serving_default"
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        inputs = {name: tf.constant(value) for name, value in inputs.items()}
        try:
            outputs = servable.predict(signature, inputs)
        except ServingFailure as failure:
            context.abort(failure.code, failure.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        servable = self._servable(request.model_spec, context)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<verb>:predict|/metadata)$"
)


def _from_json(value, dtype: tf.DType) -> tf.Tensor:
    if dtype == tf.string:

        def decode(item):
            if isinstance(item, dict):
                return base64.b64decode(item["b64"], validate=True)
            if isinstance(item, str):
                return item.encode("utf-8")
            raise ValueError(f"expected a string or {{'b64': ...}}, got {item!r}")

        array = np.asarray(value, dtype=object)
        if array.size:
            array = np.vectorize(decode, otypes=[object])(array)
        return tf.constant(array, tf.string)
    return tf.constant(np.asarray(value), dtype)


def _to_json(name: str, value: np.ndarray):
    if value.dtype == object:
        if name.endswith("_bytes"):
            encode = lambda item: {"b64": base64.b64encode(item).decode("ascii")}  # noqa: E731
        else:
            encode = lambda item: item.decode("utf-8")  # noqa: E731
        value = np.vectorize(encode, otypes=[object])(value) if value.size else value
    return value.tolist()


class RestHandler(BaseHTTPRequestHandler):
    models: Models

    def log_message(self, *args) -> None:  # quiet, like the real server
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        try:
            match = _PATH.match(self.path)
            if not match or (match["verb"] == ":predict") != (method == "POST"):
                raise ServingFailure(
                    grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {self.path}"
                )
            version = int(match["version"]) if match["version"] else None
            servable = self.models.get(match["name"], version)
            if match["verb"] == "/metadata":
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for name, definition in servable.signature_defs.items():
                    signature_map.signature_def[name].CopyFrom(definition)
                self._reply(
                    200,
                    {
                        "model_spec": {
                            "name": match["name"],
                            "version": str(servable.version),
                        },
                        "metadata": {
                            "signature_def": json_format.MessageToDict(
                                signature_map, preserving_proto_field_name=True
                            )
                        },
                    },
                )
                return
            self._reply(200, self._predict(servable))
        except ServingFailure as failure:
            self._reply(HTTP_STATUS.get(failure.code, 500), {"error": failure.message})

    def _predict(self, servable: Servable) -> dict:
        length = int(self.headers.get("Content-Length", 0))
        try:
            body = json.loads(self.rfile.read(length))
            signature = body.get("signature_name", "serving_default")
            definition = servable.signature_defs.get(signature)
            names = sorted(definition.inputs) if definition else []
            if "instances" in body:
                rows = body["instances"]
                if len(names) == 1 and not (rows and isinstance(rows[0], dict)):
                    rows = [{names[0]: row} for row in rows]
                columns = {name: [row[name] for row in rows] for name in rows[0]}
            else:
                columns = body["inputs"]
                if len(names) == 1 and not isinstance(columns, dict):
                    columns = {names[0]: columns}
            inputs = {
                name: _from_json(
                    value,
                    tf.dtypes.as_dtype(definition.inputs[name].dtype)
                    if definition and name in definition.inputs
                    else tf.string,
                )
                for name, value in columns.items()
            }
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            raise ServingFailure(
                grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {error}"
            ) from None
        outputs = servable.predict(signature, inputs)
        encoded = {name: _to_json(name, value) for name, value in outputs.items()}
        if "instances" in body:
            rows = [
                {name: column[row] for name, column in encoded.items()}
                for row in range(len(next(iter(encoded.values()))))
            ]
            if len(encoded) == 1:
                rows = [next(iter(row.values())) for row in rows]
            return {"predictions": rows}
        return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rest_api_port", type=int, required=True)
    parser.add_argument("--model_config_file", required=True)
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    args = parser.parse_args()
    models = Models(args.model_config_file, args.file_system_poll_wait_seconds)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(models), server
    )
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    RestHandler.models = models
    ThreadingHTTPServer(("127.0.0.1", args.rest_api_port), RestHandler).serve_forever()


if __name__ == "__main__":
    main()
