"""Beckn provider: signatures (every rejection case), envelopes, and a real BAP walking search → cancel."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

import beckn_auth
from beckn_routes import new_context
from conftest import _make_app, bearer_client, make_user, planned_load
from flexibility import add_subscriber
from scheduler import chunks_of
from storage import FlexOrder, Job, get_db

BAP_ID, BAP_KEY = "bap.test.example", "bap-key-1"


@pytest.fixture
def keys():
    return {"bpp": beckn_auth.new_seed(), "bap": beckn_auth.new_seed()}


@pytest.fixture
def bpp(tmp_path, clock, keys):
    app = _make_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'bpp.sqlite3'}",
        clock,
        BECKN_PRIVATE_KEY=keys["bpp"],
        BECKN_CALLBACK_BACKOFF=0.01,
        BECKN_URI="http://127.0.0.1:1/beckn",
    )
    with app.app_context():
        add_subscriber(get_db(), BAP_ID, BAP_KEY, beckn_auth.public_key_b64(keys["bap"]), None, clock.now)
        get_db().commit()
    yield app
    app.extensions["beckn_executor"].shutdown(wait=True)
    app.extensions["engine"].dispose()


class Bap:
    """A real BAP on 127.0.0.1: it receives our callbacks and checks our signatures on them."""

    def __init__(self, bpp_public: str, clock):
        self.callbacks: queue.Queue = queue.Queue()
        self.bad = []
        self.clock = clock

        @Request.application
        def app(request: Request) -> Response:
            raw = request.get_data()
            try:
                beckn_auth.verify(
                    request.headers.get("Authorization"),
                    raw,
                    lambda s, k: bpp_public if (s, k) == ("cec.bpp.local", "k1") else None,
                    int(time.time()),
                )
            except beckn_auth.BecknAuthError as exc:
                self.bad.append(str(exc))
                return Response('{"message":{"ack":{"status":"NACK"}}}', status=401)
            self.callbacks.put((request.path, json.loads(raw)))
            return Response('{"message":{"ack":{"status":"ACK"}}}', content_type="application/json")

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.uri = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, action: str, timeout: float = 60) -> dict:
        path, body = self.callbacks.get(timeout=timeout)
        assert path == f"/on_{action}", path
        return body


@pytest.fixture
def bap(keys, clock):
    bap = Bap(beckn_auth.public_key_b64(keys["bpp"]), clock)
    yield bap
    bap.server.shutdown()


def signed_post(client, app, keys, action, message, bap_uri, transaction_id=None, created=None, **override):
    body = {"context": new_context(app, action, BAP_ID, bap_uri, transaction_id), "message": message}
    body["context"].update(override.pop("context", {}))
    raw = json.dumps(body).encode()
    stamp = int(app.config["CLOCK"]().timestamp()) if created is None else created
    header = override.pop("authorization", None) or beckn_auth.authorization(
        override.pop("seed", keys["bap"]),
        override.pop("subscriber", BAP_ID),
        override.pop("key_id", BAP_KEY),
        raw,
        stamp,
    )
    response = client.post(
        f"/beckn/{action}", data=raw, content_type="application/json", headers={"Authorization": header}
    )
    return response, body


def test_digest_matches_the_spec_test_vector():
    assert beckn_auth.digest(b"The quick brown fox jumps over the lazy dog") == (
        "qK3Uvd39k+SHfSdG5igXsRY2Sh+nvBSNlQkLxzM7NnP4JAHPeqLkyx7NkCluPxTLVBP47Xe+cwRbE5FM3NapGA=="
    )


def test_signed_search_is_acknowledged(bpp, keys, bap):
    response, _ = signed_post(bpp.test_client(), bpp, keys, "search", {"intent": {}}, bap.uri)
    assert response.status_code == 200 and response.get_json() == {"message": {"ack": {"status": "ACK"}}}
    callback = bap.wait("search")
    assert "catalog" in callback["message"] and bap.bad == []


def _rejected(response, reason: str):
    assert response.status_code == 401, response.get_json()
    body = response.get_json()
    assert body["message"]["ack"]["status"] == "NACK" and reason in body["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith('Signature realm="cec.bpp.local"')


def test_unsigned_request_is_refused(bpp, bap):
    body = {"context": new_context(bpp, "search", BAP_ID, bap.uri), "message": {"intent": {}}}
    _rejected(bpp.test_client().post("/beckn/search", json=body), "missing Authorization")


def test_bad_signature_is_refused(bpp, keys, bap):
    other = beckn_auth.new_seed()
    _rejected(signed_post(bpp.test_client(), bpp, keys, "search", {}, bap.uri, seed=other)[0], "bad signature")


def test_tampered_body_is_refused(bpp, keys, bap):
    body = {"context": new_context(bpp, "search", BAP_ID, bap.uri), "message": {}}
    raw = json.dumps(body).encode()
    header = beckn_auth.authorization(keys["bap"], BAP_ID, BAP_KEY, raw, int(bpp.config["CLOCK"]().timestamp()))
    tampered = raw.replace(b"{}", b'{"intent":{}}')
    response = bpp.test_client().post(
        "/beckn/search", data=tampered, content_type="application/json", headers={"Authorization": header}
    )
    _rejected(response, "bad signature")


def test_unknown_key_is_refused(bpp, keys, bap):
    _rejected(signed_post(bpp.test_client(), bpp, keys, "search", {}, bap.uri, key_id="nope")[0], "unknown key")


def test_created_in_the_future_is_refused(bpp, keys, bap):
    future = int(bpp.config["CLOCK"]().timestamp()) + 3600
    _rejected(signed_post(bpp.test_client(), bpp, keys, "search", {}, bap.uri, created=future)[0], "future")


def test_expired_signature_is_refused(bpp, keys, bap):
    past = int(bpp.config["CLOCK"]().timestamp()) - 3600
    _rejected(signed_post(bpp.test_client(), bpp, keys, "search", {}, bap.uri, created=past)[0], "expired")


def test_replayed_message_id_is_refused(bpp, keys, bap):
    client = bpp.test_client()
    body = {"context": new_context(bpp, "search", BAP_ID, bap.uri), "message": {}}
    raw = json.dumps(body).encode()
    header = beckn_auth.authorization(keys["bap"], BAP_ID, BAP_KEY, raw, int(bpp.config["CLOCK"]().timestamp()))
    headers = {"Authorization": header}
    assert client.post("/beckn/search", data=raw, content_type="application/json", headers=headers).status_code == 200
    _rejected(client.post("/beckn/search", data=raw, content_type="application/json", headers=headers), "replayed")


def test_wrong_algorithm_and_foreign_key_are_refused(bpp, keys, bap):
    client = bpp.test_client()
    body = {"context": new_context(bpp, "search", BAP_ID, bap.uri), "message": {}}
    raw = json.dumps(body).encode()
    good = beckn_auth.authorization(keys["bap"], BAP_ID, BAP_KEY, raw, int(bpp.config["CLOCK"]().timestamp()))
    rsa = good.replace('algorithm="ed25519"', 'algorithm="rsa-sha256"')
    _rejected(
        client.post("/beckn/search", data=raw, content_type="application/json", headers={"Authorization": rsa}),
        "not ed25519",
    )
    with bpp.app_context():
        add_subscriber(get_db(), "other.bap", "k9", beckn_auth.public_key_b64(keys["bap"]), None, bpp.config["CLOCK"]())
        get_db().commit()
    response, _ = signed_post(client, bpp, keys, "search", {}, bap.uri, subscriber="other.bap", key_id="k9")
    _rejected(response, "does not belong to context.bap_id")


@pytest.mark.parametrize(
    ("action", "change", "path"),
    [
        ("search", {"context": {"domain": "mobility"}}, "context.domain"),
        ("search", {"context": {"message_id": ""}}, "context.message_id"),
        ("select", {"message": {"order": {"items": []}}}, "message.order.items"),
        ("status", {"message": {}}, "message.order_id"),
        ("select", {"context": {"action": "init"}}, "context.action"),
        ("search", {"context": {"transaction_id": "x" * 101}}, "context.transaction_id"),
        ("search", {"context": {"message_id": "a\u0000b"}}, "context.message_id"),
    ],
)
def test_bad_envelopes_get_a_nack_naming_the_path(bpp, keys, bap, action, change, path):
    message = change.get("message", {"order_id": "x"} if action == "status" else {"order": {"items": [{"id": "a"}]}})
    response, _ = signed_post(bpp.test_client(), bpp, keys, action, message, bap.uri, context=change.get("context", {}))
    body = response.get_json()
    assert response.status_code == 400 and body["error"]["code"] == "30000" and body["error"]["paths"] == path


def audit(app) -> list[dict]:
    from pathlib import Path

    return [json.loads(line) for line in Path(app.config["AUDIT_LOG_PATH"]).read_text().splitlines()]


def _load(app, asset_id, start, end) -> float:
    with app.app_context():
        return sum(
            j.power_kw
            for j in get_db().query(Job).filter(Job.asset_id == asset_id, Job.status == "scheduled")
            if any(a < end and b > start for a, b in chunks_of(j))
        )


def test_a_buyer_walks_search_to_cancel_and_the_plan_honours_the_turn_down(bpp, keys, bap):
    api = bearer_client(bpp, make_user(bpp, "operator"))
    asset = api.post("/api/v1/assets", json={"name": "gpu-pod", "region_id": 14, "max_power_kw": 100}).get_json()
    jobs = [
        api.post(
            "/api/v1/jobs",
            json={
                "name": f"train-{i}",
                "duration_minutes": 120,
                "power_kw": 40,
                "asset_id": asset["id"],
                "deadline": "2026-11-28T09:00:00Z",
            },
        ).get_json()
        for i in range(2)
    ]
    assert all(j["status"] == "scheduled" for j in jobs)
    client, tx = bpp.test_client(), str(uuid.uuid4())

    assert signed_post(client, bpp, keys, "search", {"intent": {}}, bap.uri, tx)[0].status_code == 200
    catalog = bap.wait("search")["message"]["catalog"]
    items = [i for p in catalog["providers"] for i in p["items"]]
    down = max(
        (i for i in items if i["descriptor"]["code"] == "down"),
        key=lambda i: float(i["quantity"]["available"]["measure"]["value"]),
    )
    window = down["time"]["range"]
    kw = float(down["quantity"]["available"]["measure"]["value"])
    assert kw >= 40 and float(down["price"]["value"]) > 0
    tags = {t["descriptor"]["code"]: t["value"] for t in down["tags"][0]["list"]}
    assert tags["direction"] == "turn-down" and tags["gsp_group"] == "J"

    order = {"items": [{"id": down["id"], "quantity": {"selected": {"measure": {"unit": "kW", "value": str(kw)}}}}]}
    signed_post(client, bpp, keys, "select", {"order": order}, bap.uri, tx)
    quote = bap.wait("select")["message"]["order"]
    assert quote["quote"]["price"]["value"] == down["price"]["value"]
    signed_post(client, bpp, keys, "init", {"order": {**order, "billing": {"name": "Grid Buyer Ltd"}}}, bap.uri, tx)
    terms = bap.wait("init")["message"]["order"]
    assert terms["payments"][0]["type"] == "POST-FULFILLMENT" and terms["cancellation_terms"]

    from timeutil import parse_utc

    start, end = parse_utc(window["start"]), parse_utc(window["end"])
    before = _load(bpp, asset["id"], start, end)
    assert before >= kw
    signed_post(client, bpp, keys, "confirm", {"order": order}, bap.uri, tx)
    confirmed = bap.wait("confirm")
    assert "error" not in confirmed, confirmed
    order_id = confirmed["message"]["order"]["id"]
    assert confirmed["message"]["order"]["status"] == "ACTIVE"
    after = _load(bpp, asset["id"], start, end)
    assert after <= max(before - kw, 0) + 1e-6  # the committed kW left the window
    for job in api.get("/api/v1/jobs").get_json():
        assert job["placement"]["end"] <= job["deadline"]  # deadlines kept
    assert max(planned_load(bpp).values()) <= 100  # cap kept
    decisions = audit(bpp)
    moved = [d for d in decisions if d["kind"] == "replan" and d.get("order_id") == order_id]
    assert moved and any(d["kind"] == "beckn_order" for d in decisions)

    # a repeated confirm (new message id) changes nothing
    signed_post(client, bpp, keys, "confirm", {"order": order}, bap.uri, tx)
    bap.wait("confirm")
    assert _load(bpp, asset["id"], start, end) == after
    assert len([d for d in audit(bpp) if d["kind"] == "replan"]) == len(moved)

    signed_post(client, bpp, keys, "status", {"order_id": order_id}, bap.uri, tx)
    status = {t["descriptor"]["code"]: t["value"] for t in bap.wait("status")["message"]["order"]["tags"][0]["list"]}
    assert float(status["committed_kw"]) == kw and float(status["planned_kw"]) == after

    signed_post(client, bpp, keys, "cancel", {"order_id": order_id, "cancellation_reason_id": "1"}, bap.uri, tx)
    cancelled = bap.wait("cancel")["message"]["order"]
    assert cancelled["status"] == "CANCELLED"
    with bpp.app_context():
        assert get_db().query(FlexOrder).filter_by(status="ACTIVE").count() == 0  # the commitment is gone
    assert bap.bad == []  # every callback carried our valid signature

    page = bpp.test_client().get(f"/beckn/orders/{tx}").data.decode()
    for action in (
        "search",
        "on_search",
        "select",
        "on_select",
        "init",
        "on_init",
        "confirm",
        "on_confirm",
        "status",
        "on_status",
        "cancel",
        "on_cancel",
    ):
        assert f"<td>{action}</td>" in page
    assert "turn-down" in bpp.test_client().get("/beckn/slots").data.decode()


def test_auth_off_is_acknowledged_and_said_on_every_page(tmp_path, clock):
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'off.sqlite3'}", clock, BECKN_AUTH="off")
    body = {"context": new_context(app, "search", BAP_ID, "http://127.0.0.1:9"), "message": {}}
    client = app.test_client()
    assert client.post("/beckn/search", json=body).status_code == 200
    assert client.post("/beckn/search", json=body).status_code == 200  # a repeat is acknowledged, not re-processed
    assert "Beckn signatures are OFF" in client.get("/").data.decode()
    app.extensions["beckn_executor"].shutdown(wait=True)
    app.extensions["engine"].dispose()


def test_auth_off_refused_in_production(tmp_path, clock, monkeypatch):
    monkeypatch.setenv("CEC_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "x" * 64)
    with pytest.raises(RuntimeError, match="BECKN_AUTH=off"):
        _make_app(tmp_path, f"sqlite:///{tmp_path / 'p.sqlite3'}", clock, BECKN_AUTH="off")


def test_keygen_and_subscribe_cli(runner, app, tmp_path):
    app.config["BECKN_PRIVATE_KEY_PATH"] = str(tmp_path / "keys" / "seed")
    out = runner.invoke(args=["beckn", "keygen"])
    assert out.exit_code == 0 and "signing_public_key=" in out.output
    assert (tmp_path / "keys" / "seed").stat().st_mode & 0o777 == 0o600
    assert runner.invoke(args=["beckn", "keygen"]).exit_code != 0  # never silently replaced
    public = out.output.split("signing_public_key=")[1].strip()
    assert runner.invoke(args=["beckn", "subscribe", "x.bap", "k1", public]).exit_code == 0
    assert runner.invoke(args=["beckn", "subscribe", "x.bap", "k1", "not-a-key"]).exit_code != 0


def test_cli_bap_client_signs_sends_and_prints_the_callback(tmp_path):
    from werkzeug.serving import make_server as serve

    from timeutil import utcnow

    app = _make_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        utcnow,
        BECKN_CALLBACK_BACKOFF=0.01,
        BECKN_PRIVATE_KEY=beckn_auth.new_seed(),
    )
    seed = beckn_auth.new_seed()
    (tmp_path / "bap.seed").write_text(seed)
    with app.app_context():
        add_subscriber(get_db(), "cli.bap", "k1", beckn_auth.public_key_b64(seed), None, utcnow())
        get_db().commit()
    server = serve("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket_port() as listen:
        result = app.test_cli_runner().invoke(
            args=[
                "beckn",
                "send",
                "search",
                "--to",
                f"http://127.0.0.1:{server.server_port}/beckn",
                "--bap-id",
                "cli.bap",
                "--seed-file",
                str(tmp_path / "bap.seed"),
                "--listen",
                str(listen),
                "--wait",
                "30",
            ]
        )
    server.shutdown()
    thread.join(timeout=5)
    app.extensions["beckn_executor"].shutdown(wait=True)
    app.extensions["engine"].dispose()
    assert result.exit_code == 0, result.output
    assert '"ACK"' in result.output and "callback /on_search" in result.output and '"catalog"' in result.output


class socket_port:
    """A free 127.0.0.1 port number."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc):
        return False
