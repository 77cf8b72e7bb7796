"""Serving: exported SavedModels behind TF Serving's gRPC and REST protocols.

The server is `tensorflow_model_server` where it is on PATH, otherwise
`tests/model_server.py`, a stand-in that speaks the same wire protocols on
loopback (the real binary is in no registry this project installs from). It
runs in its own process and sees only the SavedModels. Clients are
`simmim_tf.serving`'s; answers are compared with the Keras models.
"""

import io
import shutil
import socket
import subprocess
import sys
import time

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import simmim_tf
from simmim_tf.cli import main
from simmim_tf.export import export_run, write_models_config
from simmim_tf.serving import GrpcClient, RestClient, ServingError, connect, run_load
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor
from tests.bad_inputs import BAD_INPUTS, HANDLED_TEXTS
from tests.conftest import export_run_folder, tiny_backbone


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _classifier(seed: int) -> simmim_tf.SimMIMClassifier:
    backbone = tiny_backbone()
    keras.utils.set_random_seed(seed)  # the head differs between seeds
    return simmim_tf.SimMIMClassifier(
        backbone=backbone, num_classes=100, modalities=("image",)
    )


@pytest.fixture(scope="module")
def served(exported_retriever, tmp_path_factory):
    """Two exported models behind one server process; clients for both protocols."""
    root = tmp_path_factory.mktemp("serving")
    base = exported_retriever.parent.parent  # emoji/1 is there already
    classifier = _classifier(seed=1)
    classifier_run, _ = export_run_folder(
        root / "cls", classifier, task="classify", label="subgroup"
    )
    export_run(classifier_run, "emoji-classes", base=base)
    write_models_config(base, root=str(base))  # the server sees base itself
    grpc_port, rest_port = _free_port(), _free_port()
    binary = shutil.which("tensorflow_model_server")
    command = [binary] if binary else [sys.executable, "tests/model_server.py"]
    # Clients made before the server exists: their first calls wait through
    # UNAVAILABLE (connection refused) while it starts.
    grpc_client = GrpcClient(f"127.0.0.1:{grpc_port}", "emoji", deadline=180)
    log = (root / "server.log").open("w")  # a pipe nobody reads would fill up
    process = subprocess.Popen(
        [
            *command,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_config_file={base / 'models.config'}",
            "--file_system_poll_wait_seconds=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            grpc_client.signatures()
        except ServingError:
            raise AssertionError((root / "server.log").read_text()[-3000:]) from None
        yield dict(
            base=base,
            grpc=f"127.0.0.1:{grpc_port}",
            rest=f"127.0.0.1:{rest_port}",
            classifier=classifier,
            classifier_run=classifier_run,
            process=process,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def keras_answers(retrieval_run, google_examples, served):
    """Each example's text embedding and class probabilities, from Keras."""
    folder, config = retrieval_run
    image_bytes, texts = google_examples
    retriever = keras.models.load_model(folder / "model.keras")
    x = build_preprocessor(config)({"images": image_bytes, "texts": texts})
    tower = retriever.backbone.text_tower(
        {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    )
    probabilities = tf.nn.softmax(served["classifier"]({"images": x["images"]}), -1)
    names = load_splits(config)[1].info.features["subgroup"].names
    return {
        "embedding": tf.math.l2_normalize(tower["text_unimodal_embedding"], -1).numpy(),
        "probabilities": probabilities.numpy(),
        "class_name": [names[i].encode() for i in probabilities.numpy().argmax(-1)],
    }


CLIENTS = {
    "grpc": lambda served, model, **kw: GrpcClient(served["grpc"], model, **kw),
    "rest": lambda served, model, **kw: RestClient(served["rest"], model, **kw),
    "rest-rows": lambda served, model, **kw: RestClient(
        served["rest"], model, row_format=True, **kw
    ),
}


@pytest.mark.parametrize("protocol", sorted(CLIENTS))
def test_every_protocol_answers_as_keras(
    protocol, served, google_examples, keras_answers
):
    image_bytes, texts = google_examples
    retriever = CLIENTS[protocol](served, "emoji")
    embedded = retriever.predict({"text": texts}, "embed_text")
    np.testing.assert_allclose(
        embedded["embedding"], keras_answers["embedding"], atol=1e-5
    )
    assert embedded["embedding"].dtype == np.float32

    classifier = CLIENTS[protocol](served, "emoji-classes")
    classified = classifier.predict({"image_bytes": image_bytes})
    np.testing.assert_allclose(
        classified["probabilities"], keras_answers["probabilities"], atol=1e-5
    )
    np.testing.assert_array_equal(
        classified["class_id"], keras_answers["probabilities"].argmax(-1)
    )
    assert list(classified["class_name"]) == keras_answers["class_name"]

    if protocol != "rest-rows":  # `k` is a scalar: the columnar form only
        found = retriever.predict({"text": texts[:2], "k": 3}, "search")
        assert found["ids"].shape == found["names"].shape == found["scores"].shape
        assert found["ids"].shape == (2, 3)


def test_metadata_lists_the_documented_signatures(served):
    for protocol in ("grpc", "rest"):
        signatures = connect(served[protocol], "emoji", protocol=protocol).signatures()
        assert sorted(signatures) == ["embed_image", "embed_text", "match", "search"]
        assert signatures["search"]["inputs"] == {"text": "string", "k": "int32"}
        assert signatures["search"]["outputs"] == {
            "ids": "string",
            "names": "string",
            "scores": "float32",
        }


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_errors_name_the_model_version_and_input_and_the_server_goes_on(
    protocol, served, google_examples, keras_answers
):
    image_bytes, texts = google_examples
    client = connect(served[protocol], "emoji", protocol=protocol)
    with pytest.raises(ServingError, match="model 'nope' version latest: NOT_FOUND"):
        connect(served[protocol], "nope", protocol=protocol).signatures()
    with pytest.raises(ServingError, match="model 'emoji' version 7: NOT_FOUND"):
        connect(served[protocol], "emoji", protocol=protocol, version=7).signatures()
    with pytest.raises(ServingError, match="input 'text'.*missing"):
        client.predict({}, "embed_text")
    with pytest.raises(ServingError, match="input 'image'.*unexpected"):
        client.predict({"text": texts, "image": image_bytes}, "embed_text")
    with pytest.raises(ServingError, match="no signature 'classify'"):
        client.predict({"text": texts}, "classify")
    with pytest.raises(ServingError, match="input 'text'.*expected strings"):
        client.predict({"text": [1, 2]}, "embed_text")
    with pytest.raises(ServingError, match="input 'k'.*expected int32"):
        client.predict({"text": texts, "k": "five"}, "search")
    # Refused by the model itself, inside the server.
    with pytest.raises(ServingError, match="(?s)INVALID_ARGUMENT.*a text is empty"):
        client.predict({"text": ["a cat", "   "]}, "embed_text")
    with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
        client.predict({"image_bytes": [b"\x89PNG not really"]}, "embed_image")
    if protocol == "grpc":  # past the client's checks: the server checks dtypes too
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "emoji"
        request.model_spec.signature_name = "embed_text"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int32)))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(served["grpc"])
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "text" in refused.value.details()
    answer = client.predict({"text": texts}, "embed_text")
    np.testing.assert_allclose(answer["embedding"], keras_answers["embedding"], atol=1e-5)


@pytest.fixture(scope="module")
def saved_retriever(served):
    return tf.saved_model.load(str(served["base"] / "emoji" / "1"))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_the_bad_input_catalogue_at_the_signature(saved_retriever, case):
    signature, inputs, message = BAD_INPUTS[case]
    tensors = {name: tf.constant(value, tf.string) for name, value in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        saved_retriever.signatures[signature](**tensors)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_the_bad_input_catalogue_at_the_endpoint_and_the_server_goes_on(
    protocol, served, retrieval_run, google_examples, keras_answers
):
    image_bytes, texts = google_examples
    client = connect(served[protocol], "emoji", protocol=protocol)
    for case, (signature, inputs, message) in BAD_INPUTS.items():
        with pytest.raises(ServingError, match=message):
            client.predict(inputs, signature)
        answer = client.predict({"text": texts}, "embed_text")  # the next good one
        np.testing.assert_allclose(
            answer["embedding"], keras_answers["embedding"], atol=1e-5, err_msg=case
        )
    for case, text in HANDLED_TEXTS.items():
        embedding = client.predict({"text": [text]}, "embed_text")["embedding"]
        assert embedding.shape == keras_answers["embedding"][:1].shape, case
        np.testing.assert_allclose(np.linalg.norm(embedding), 1.0, atol=1e-5)

    # Every common format: decoded as the preprocessor decodes it.
    drawing = Image.open(io.BytesIO(image_bytes[0])).convert("RGB")
    formats = {}
    for name, options in {
        "JPEG": {"quality": 95},
        "GIF": {},
        "BMP": {},
        "WEBP": {"lossless": True},
    }.items():
        buffer = io.BytesIO()
        drawing.save(buffer, name, **options)
        formats[name] = buffer.getvalue()
    encoded = np.array(list(formats.values()), dtype=object)
    folder, config = retrieval_run
    retriever = keras.models.load_model(folder / "model.keras")
    x = build_preprocessor(config, modalities=("image",))({"images": encoded})
    tower = retriever.backbone.image_tower(x["images"])["image_unimodal_embedding"]
    served_embeddings = client.predict({"image_bytes": encoded}, "embed_image")
    np.testing.assert_allclose(
        served_embeddings["embedding"], tf.math.l2_normalize(tower, -1), atol=1e-5
    )


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_server_that_never_comes_up_fails_at_the_deadline(protocol):
    client = connect(f"127.0.0.1:{_free_port()}", "emoji", protocol=protocol, deadline=1)
    start = time.monotonic()
    with pytest.raises(ServingError, match="'emoji' version latest: UNAVAILABLE"):
        client.signatures()
    assert time.monotonic() - start < 5


def test_query_cli_searches_and_classifies(served, google_examples, tmp_path, capsys):
    image_bytes, texts = google_examples
    image = tmp_path / "emoji.png"
    image.write_bytes(image_bytes[0])
    server = ["--server", served["grpc"]]
    assert (
        main(["query", *server, "--model", "emoji", "--text", "pizza", "--k", "3"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "emoji (search)" and len(lines) == 4
    assert (
        main(["query", *server, "--model", "emoji-classes", "--image", str(image)]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("emoji-classes (serving_default)") and "class_name" in out
    rest = ["--server", served["rest"], "--rest", "--model", "emoji"]
    assert main(["query", *rest, "--image", str(image), "--text", texts[0].decode()]) == 0
    assert "itm_probability" in capsys.readouterr().out
    assert main(["query", *rest, "--text", "pizza", "--signature", "nope"]) == 2
    assert "no signature 'nope'" in capsys.readouterr().err


def test_load_8_clients_200_requests_each_every_answer_right(
    served, google_examples, keras_answers
):
    image_bytes, _ = google_examples
    clients = [
        connect(served[protocol], "emoji-classes", protocol=protocol)
        for protocol in ["grpc", "rest"] * 4
    ]
    for client in clients:
        client.signatures()

    def request(index: int):
        example = index % len(image_bytes)
        answer = clients[index % len(clients)].predict(
            {"image_bytes": image_bytes[example : example + 1]}
        )
        return example, answer["probabilities"][0]

    load = run_load(request, requests=8 * 200, concurrency=8)
    assert not load["errors"], list(load["errors"].values())[:3]
    assert len(load["results"]) == 1600
    for example, probabilities in load["results"].values():
        np.testing.assert_allclose(
            probabilities, keras_answers["probabilities"][example], atol=1e-5
        )
    latency = np.array(load["latency_s"]) * 1000
    print(
        f"\nload: 1600 requests, 8 clients: p50 {np.percentile(latency, 50):.1f} ms, "
        f"p99 {np.percentile(latency, 99):.1f} ms, {1600 / load['wall_s']:.0f} req/s"
    )


# Last in the file: it replaces the classifier the tests above compare with.
def test_a_new_version_is_served_without_a_restart(served, google_examples):
    image_bytes, _ = google_examples
    client = GrpcClient(served["grpc"], "emoji-classes")
    before = client.predict({"image_bytes": image_bytes})["probabilities"]
    newer = _classifier(seed=2)
    folder, config = export_run_folder(
        served["classifier_run"].parent / "cls2", newer, task="classify", label="subgroup"
    )
    export_run(folder, "emoji-classes", base=served["base"])
    write_models_config(served["base"], root=str(served["base"]))
    x = build_preprocessor(config, modalities=("image",))({"images": image_bytes})
    expected = tf.nn.softmax(newer({"images": x["images"]}), -1).numpy()
    assert np.abs(expected - before).max() > 1e-3
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = client.predict({"image_bytes": image_bytes})["probabilities"]
        if np.abs(now - before).max() > 1e-6:
            break
        time.sleep(0.5)
    np.testing.assert_allclose(now, expected, atol=1e-5)
    assert GrpcClient(served["grpc"], "emoji-classes", version=2).signatures()
