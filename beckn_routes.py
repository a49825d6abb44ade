"""Beckn Provider Platform (core v1.1.1): flexibility buyers (BAPs) search, select, init, confirm, status, cancel.

Each action is checked (envelope, signature, replay) and answered at once with ACK or NACK; the real answer,
`on_<action>`, is computed in the background and POSTed, signed with our key, to `context.bap_uri`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import requests
from flask import Blueprint, Flask, abort, current_app, jsonify, render_template, request

import beckn_auth
import flexibility as flex
from callbacks import private_target
from flexibility import FlexSlot
from models import iso_z
from storage import get_db

log = logging.getLogger(__name__)

beckn = Blueprint("beckn", __name__, url_prefix="/beckn")

ACTIONS = ("search", "select", "init", "confirm", "status", "cancel")
CONTEXT_FIELDS = (
    "domain",
    "action",
    "version",
    "bap_id",
    "bap_uri",
    "transaction_id",
    "message_id",
    "timestamp",
    "ttl",
)
ORDER_ACTIONS = ("select", "init", "confirm")
# What the message log's columns hold (PostgreSQL enforces VARCHAR lengths; no NUL in text anywhere).
FIELD_LIMIT = {"transaction_id": 100, "message_id": 100, "bap_id": 200}
FIELD_LIMIT = {name: FIELD_LIMIT.get(name, 2000) for name in CONTEXT_FIELDS}


def nack(code: str, message: str, paths: str = "", status: int = 400, challenge: bool = False):
    """A NACK with a Beckn error (BECKN-005 codes)."""
    body = {"message": {"ack": {"status": "NACK"}}, "error": {"code": code, "paths": paths, "message": message}}
    response = jsonify(body)
    response.status_code = status
    if challenge:
        subscriber = current_app.config["BECKN_SUBSCRIBER_ID"]
        response.headers["WWW-Authenticate"] = f'Signature realm="{subscriber}",headers="(created) (expires) digest"'
    return response


def ack():
    """The immediate acknowledgement."""
    return jsonify({"message": {"ack": {"status": "ACK"}}})


def envelope_error(action: str, body) -> tuple[str, str] | None:
    """(paths, message) of the first problem with the envelope, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("context"), dict):
        return "context", "the body must be an object with a context"
    context = body["context"]
    for name in CONTEXT_FIELDS:
        if not context.get(name):
            return f"context.{name}", f"context.{name} is required"
        if not isinstance(context[name], str) or "\x00" in context[name] or len(context[name]) > FIELD_LIMIT[name]:
            return f"context.{name}", f"context.{name} must be text of at most {FIELD_LIMIT[name]} characters"
    if action != "search" and not (context.get("bpp_id") and context.get("bpp_uri")):
        return "context.bpp_id", "context.bpp_id and context.bpp_uri are required after search"
    if context["action"] != action:
        return "context.action", f"context.action is {context['action']!r} on /{action}"
    if context["domain"] != current_app.config["BECKN_DOMAIN"]:
        return "context.domain", f"this provider serves {current_app.config['BECKN_DOMAIN']}"
    if not str(context["version"]).startswith("1.1"):
        return "context.version", "core version 1.1.x is required"
    if not str(context["bap_uri"]).startswith(("http://", "https://")):
        return "context.bap_uri", "bap_uri must be an http(s) URL"
    message = body.get("message")
    if not isinstance(message, dict):
        return "message", "message is required"
    if action in ORDER_ACTIONS:
        items = (message.get("order") or {}).get("items")
        if action == "select" and (not isinstance(items, list) or not items or not items[0].get("id")):
            return "message.order.items", "select needs message.order.items[0].id"
    if action in ("status", "cancel") and not message.get("order_id"):
        return "message.order_id", f"{action} needs message.order_id"
    return None


@beckn.post("/<action>")
def receive(action: str):
    """Validate, authenticate and acknowledge one Beckn action; answer it in the background."""
    if action not in ACTIONS:
        return nack("40001", f"action {action!r} is not applicable here", "context.action", 404)
    raw = request.get_data()
    try:
        body = json.loads(raw)
    except ValueError:
        return nack("30000", "the body is not JSON", "")
    problem = envelope_error(action, body)
    if problem:
        return nack("30000", problem[1], problem[0])
    db, now = get_db(), current_app.config["CLOCK"]()
    if current_app.config["BECKN_AUTH"] != "off":
        try:
            signed = beckn_auth.verify(
                request.headers.get("Authorization"), raw, lambda s, k: flex.public_key(db, s, k), int(now.timestamp())
            )
        except beckn_auth.BecknAuthError as exc:
            return nack("10001", str(exc), "headers.Authorization", 401, challenge=True)
        if signed.subscriber_id != body["context"]["bap_id"]:
            return nack("10001", "the signing key does not belong to context.bap_id", "context.bap_id", 401, True)
    if flex.record_message(db, "in", body, now, "ACK") is None:
        db.rollback()
        if current_app.config["BECKN_AUTH"] != "off":
            return nack("10001", "replayed message_id", "context.message_id", 401, challenge=True)
        return ack()  # development: a repeated message is acknowledged and changes nothing
    db.commit()
    app = current_app._get_current_object()
    app.extensions["beckn_executor"].submit(respond, app, action, body)
    return ack()


# ---- the asynchronous answers ----------------------------------------------------------------------------


def respond(app: Flask, action: str, body: dict) -> None:
    """Compute on_<action> and POST it to the BAP (in a worker thread)."""
    with app.app_context():
        db, now = get_db(), app.config["CLOCK"]()
        try:
            message, error = ANSWERS[action](db, now, body)
            db.commit()
        except Exception as exc:  # a failure still gets an answer
            db.rollback()
            log.exception("beckn %s failed", action)
            message, error = {}, {"code": "40000", "message": f"could not process {action}: {exc.__class__.__name__}"}
        reply = {"context": reply_context(app, body["context"], now), "message": message}
        if error:
            reply["error"] = error
        row = flex.record_message(db, "out", reply, now, "sending", action=f"on_{action}")
        db.commit()  # logged before it leaves, so the transaction's messages stay in order
        outcome = send(app, body["context"]["bap_uri"], f"on_{action}", reply)
        if row is not None:
            row.outcome = outcome
            db.commit()


def reply_context(app: Flask, context: dict, now: datetime) -> dict:
    """Our context for a callback: same transaction and message ids, our identity."""
    return {
        **context,
        "action": f"on_{context['action']}",
        "bpp_id": app.config["BECKN_SUBSCRIBER_ID"],
        "bpp_uri": app.config["BECKN_URI"],
        "timestamp": iso_z(now),
    }


def send(app: Flask, bap_uri: str, action: str, reply: dict) -> str:
    """POST a signed callback with retries and backoff; the outcome as text."""
    data = json.dumps(reply, separators=(",", ":"), sort_keys=True).encode()
    seed = signing_seed(app)
    url = bap_uri.rstrip("/") + "/" + action
    if not app.config["CALLBACK_ALLOW_PRIVATE"]:
        refused = private_target(url)
        if refused:
            return f"refused: {refused}"
    outcome = "not sent"
    for attempt in range(1, app.config["BECKN_CALLBACK_ATTEMPTS"] + 1):
        headers = {"Content-Type": "application/json"}
        if seed:
            headers["Authorization"] = beckn_auth.authorization(
                seed, app.config["BECKN_SUBSCRIBER_ID"], app.config["BECKN_UNIQUE_KEY_ID"], data, int(time.time())
            )
        try:
            response = requests.post(url, data=data, headers=headers, timeout=(3.05, 10), allow_redirects=False)
            outcome = f"HTTP {response.status_code}"
            if response.ok:
                return outcome
        except requests.RequestException as exc:
            outcome = f"{exc.__class__.__name__}"
        time.sleep(app.config["BECKN_CALLBACK_BACKOFF"] * 2 ** (attempt - 1))
    return outcome


def signing_seed(app: Flask) -> str | None:
    """Our private signing seed: BECKN_PRIVATE_KEY, else the key file `beckn keygen` wrote."""
    if app.config.get("BECKN_PRIVATE_KEY"):
        return app.config["BECKN_PRIVATE_KEY"]
    try:
        with open(app.config["BECKN_PRIVATE_KEY_PATH"]) as handle:
            return handle.read().strip()
    except OSError:
        return None


def flexibility_service(app: Flask | None = None) -> flex.Flexibility:
    """The app's flexibility service."""
    return (app or current_app).extensions["flexibility"]


def item_json(slot: FlexSlot) -> dict:
    """A catalog item in Beckn v1.1 shape."""
    word = "Turn down" if slot.direction == "down" else "Turn up"
    window = {"start": iso_z(slot.start), "end": iso_z(slot.end)}
    tags = [
        {"descriptor": {"code": code}, "value": str(value)}
        for code, value in (
            ("direction", "turn-down" if slot.direction == "down" else "turn-up"),
            ("kw", slot.kw),
            ("kwh", round(slot.kwh, 3)),
            ("region_id", slot.asset.region_id),
            ("gsp_group", flex.letter(slot.asset)),
            ("carbon_g_per_kwh", slot.carbon_g_per_kwh),
            ("price_p_per_kwh", slot.price_p_per_kwh),
        )
    ]
    return {
        "id": slot.id,
        "descriptor": {"name": f"{word} {slot.kw:g} kW at {slot.asset.name}", "code": slot.direction},
        "price": {"currency": "GBP", "value": f"{slot.price_gbp:.2f}"},
        "quantity": {"available": {"measure": {"unit": "kW", "value": f"{slot.kw:g}"}}},
        "fulfillment_ids": [f"f-{slot.id}"],
        "location_ids": [f"region-{slot.asset.region_id}"],
        "time": {"range": window},
        "tags": [{"descriptor": {"code": "flexibility", "name": "Flexibility"}, "list": tags}],
    }


def on_search(db, now, body) -> tuple[dict, dict | None]:
    """The catalog: one provider per asset, one item per flexibility slot."""
    providers = {}
    for slot in flexibility_service().slots(db, now):
        provider = providers.setdefault(
            slot.asset.id,
            {
                "id": f"asset-{slot.asset.id}",
                "descriptor": {"name": slot.asset.name},
                "locations": [
                    {"id": f"region-{slot.asset.region_id}", "descriptor": {"name": flex.region_name(slot.asset)}}
                ],
                "items": [],
                "fulfillments": [],
            },
        )
        provider["items"].append(item_json(slot))
        provider["fulfillments"].append(
            {
                "id": f"f-{slot.id}",
                "type": "FLEXIBILITY",
                "stops": [{"type": "start", "time": {"range": {"start": iso_z(slot.start), "end": iso_z(slot.end)}}}],
            }
        )
    catalog = {
        "descriptor": {"name": "Compute-Energy Convergence: shiftable compute load"},
        "providers": list(providers.values()),
    }
    return {"catalog": catalog}, None


def order_json(order, extra: dict | None = None) -> dict:
    """An order in Beckn v1.1 shape."""
    window = {"start": iso_z(order.start), "end": iso_z(order.end)}
    status = {"SELECTED": "DRAFT", "INITIALIZED": "DRAFT", "ACTIVE": "ACTIVE", "CANCELLED": "CANCELLED"}[order.status]
    return {
        "id": order.id,
        "status": status,
        "provider": {"id": f"asset-{order.asset_id}"},
        "items": [
            {"id": order.item_id, "quantity": {"selected": {"measure": {"unit": "kW", "value": f"{order.kw:g}"}}}}
        ],
        "fulfillments": [
            {"id": f"f-{order.item_id}", "type": "FLEXIBILITY", "stops": [{"type": "start", "time": {"range": window}}]}
        ],
        "quote": {
            "price": {"currency": "GBP", "value": f"{order.price_gbp:.2f}"},
            "breakup": [
                {
                    "title": f"{order.direction}-flexibility {order.kw:g} kW",
                    "price": {"currency": "GBP", "value": f"{order.price_gbp:.2f}"},
                }
            ],
        },
        "payments": [
            {
                "type": "POST-FULFILLMENT",
                "status": "NOT-PAID",
                "params": {"currency": "GBP", "amount": f"{order.price_gbp:.2f}"},
            }
        ],
        "cancellation_terms": [
            {
                "external_ref": {"mimetype": "text/plain", "url": "about:terms"},
                "cancel_by": {"timestamp": (order.terms or {}).get("cancellation_free_until")},
            }
        ],
        "tags": [
            {
                "descriptor": {"code": "terms"},
                "list": [
                    {"descriptor": {"code": k}, "value": str(v)}
                    for k, v in {**(order.terms or {}), **(extra or {})}.items()
                ],
            }
        ],
    }


def _requested_kw(item: dict) -> float | None:
    try:
        return float(item["quantity"]["selected"]["measure"]["value"])
    except (KeyError, TypeError, ValueError):
        return None


def on_select(db, now, body):
    """Quote the selected item."""
    context, item = body["context"], body["message"]["order"]["items"][0]
    result = flexibility_service().select(
        db, now, context["transaction_id"], context["bap_id"], context["bap_uri"], item["id"], _requested_kw(item)
    )
    if isinstance(result, str):
        return {}, {"code": "40002" if "quantity" in result else "30004", "message": result}
    return {"order": order_json(result)}, None


def _draft(db, body):
    order = flex.order_of(db, transaction_id=body["context"]["transaction_id"])
    if order is None:
        return None, {"code": "30010", "message": "no order in this transaction: select an item first"}
    return order, None


def on_init(db, now, body):
    """Terms and payment terms for the draft order."""
    order, error = _draft(db, body)
    if error:
        return {}, error
    if order.status == "SELECTED":
        order.status, order.updated_at = "INITIALIZED", now
    return {"order": order_json(order)}, None


def on_confirm(db, now, body):
    """Commit: the planner re-plans the asset to honour the order; each moved job is audited with the order id."""
    order, error = _draft(db, body)
    if error:
        return {}, error
    if order.status == "CANCELLED":
        return {"order": order_json(order)}, {"code": "50001", "message": "the order was cancelled"}
    moves = flexibility_service().confirm(db, order, now)
    if isinstance(moves, str):
        return {"order": order_json(order)}, {"code": "40002", "message": moves}
    current_app.extensions["scheduler"].decide(
        db,
        "beckn_order",
        None,
        now,
        order_id=order.id,
        transaction_id=order.transaction_id,
        bap_id=order.bap_id,
        direction=order.direction,
        kw=order.kw,
        window={"start": order.start, "end": order.end},
        price_gbp=order.price_gbp,
        moved_jobs=[m["job_id"] for m in moves],
        reason=f"confirmed {order.direction} {order.kw:g} kW at asset {order.asset_id}",
    )
    return {"order": order_json(order, {"moved_jobs": len(moves)})}, None


def _ordered(db, body):
    """The order a status or cancel message names, or the Beckn error saying it does not exist."""
    order = flex.order_of(db, order_id=str(body["message"]["order_id"]))
    return order, None if order else {"code": "30010", "message": "order not found"}


def on_status(db, now, body):
    """Committed vs planned kW, and delivered once the window is past."""
    order, error = _ordered(db, body)
    if error:
        return {}, error
    return {"order": order_json(order, flexibility_service().status(db, order, now))}, None


def on_cancel(db, now, body):
    """Release the commitment under the terms."""
    order, error = _ordered(db, body)
    if error:
        return {}, error
    if order.status == "CANCELLED":
        return {"order": order_json(order)}, None  # already released: nothing changes
    fee = flexibility_service().cancel(db, order, now)
    current_app.extensions["scheduler"].decide(
        db,
        "beckn_order",
        None,
        now,
        order_id=order.id,
        status="CANCELLED",
        fee_gbp=fee,
        reason="cancelled by the buyer; commitment released",
    )
    return {"order": order_json(order, {"fee_gbp": fee})}, None


ANSWERS = {
    "search": on_search,
    "select": on_select,
    "init": on_init,
    "confirm": on_confirm,
    "status": on_status,
    "cancel": on_cancel,
}


# ---- pages ---------------------------------------------------------------------------------------------


@beckn.get("/slots")
def slots_page():
    """The flexibility on offer now, on a timeline."""
    now = current_app.config["CLOCK"]()
    found = flexibility_service().slots(get_db(), now)
    return render_template("beckn_slots.html", slots=found, now=now)


@beckn.get("/orders/<transaction_id>")
def order_page(transaction_id: str):
    """A transaction's messages in order, and its order."""
    db = get_db()
    found = flex.messages(db, transaction_id)
    if not found:
        abort(404)
    return render_template(
        "beckn_order.html",
        messages=found,
        order=flex.order_of(db, transaction_id=transaction_id),
        transaction_id=transaction_id,
    )


def init_beckn(app: Flask) -> None:
    """The background pool for callbacks, and the flexibility service."""
    if app.config["BECKN_AUTH"] == "off" and app.config["ENV_NAME"] == "production":
        raise RuntimeError("BECKN_AUTH=off is for local development only")
    app.extensions["beckn_executor"] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="beckn")
    app.extensions["flexibility"] = flex.Flexibility(
        app.extensions["scheduler"], margin_gbp_per_kwh=app.config["BECKN_MARGIN_GBP_PER_KWH"]
    )


def new_context(app: Flask, action: str, bap_id: str, bap_uri: str, transaction_id: str | None = None) -> dict:
    """A context for a request we (as a test or CLI BAP) send."""
    return {
        "domain": app.config["BECKN_DOMAIN"],
        "action": action,
        "version": "1.1.1",
        "bap_id": bap_id,
        "bap_uri": bap_uri,
        "bpp_id": app.config["BECKN_SUBSCRIBER_ID"],
        "bpp_uri": app.config["BECKN_URI"],
        "transaction_id": transaction_id or str(uuid.uuid4()),
        "message_id": str(uuid.uuid4()),
        "timestamp": iso_z(app.config["CLOCK"]()),
        "ttl": "PT30S",
        "location": {"country": {"code": "GBR"}, "city": {"code": "*"}},
    }
