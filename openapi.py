"""The OpenAPI 3.1 document for /api/v1, generated from the pydantic models in models.py."""

from __future__ import annotations

from functools import lru_cache

from pydantic.json_schema import models_json_schema

from models import AssetOut, AssetSpec, ErrorOut, JobOut, JobSpec, PlanOut, PlanSpec, Signal

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("ErrorOut"), "a malformed parameter or body, naming the field"),
    "413": _json(_ref("ErrorOut"), "the body is larger than MAX_CONTENT_LENGTH"),
    "422": _json(_ref("ErrorOut"), "invalid input, or a job that cannot be placed (`infeasible`)"),
}
# Every operation may also answer these; every error body has the ErrorOut shape.
COMMON = {
    "429": _json(_ref("ErrorOut"), "rate limited; retry after the Retry-After header's seconds"),
    "default": _json(_ref("ErrorOut"), "any other error, naming the field or `request`"),
}
AUTH = {"401": _json(_ref("ErrorOut"), "log in, or send Authorization: Bearer <token>")}
BEARER = [{"bearer": []}]


def _body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _id(name: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    }


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


@lru_cache(maxsize=1)
def openapi_spec() -> dict:
    """The whole document (built once)."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in (PlanSpec, JobSpec, AssetSpec)]
        + [(m, "serialization") for m in (PlanOut, JobOut, AssetOut, ErrorOut, Signal)],
        ref_template=REF,
    )
    not_found = {"404": _json(_ref("ErrorOut"), "no such id")}
    decisions = {
        "type": "object",
        "required": ["decisions"],
        "properties": {"decisions": {"type": "array", "items": {"type": "object"}}},
    }
    paths = {
        "/api/v1/signals": {
            "get": {
                "summary": "The merged half-hourly carbon and price signal for a region",
                "parameters": [
                    _query("region", "national, 1-17, or a postcode outward code"),
                    _query("hours", "1-48 (default 48)", {"type": "integer", "minimum": 1, "maximum": 48}),
                    _query(
                        "start", "ISO 8601 with a timezone (default: now)", {"type": "string", "format": "date-time"}
                    ),
                    _query(
                        "day", "a UK calendar day, instead of start and hours", {"type": "string", "format": "date"}
                    ),
                ],
                "responses": {
                    "200": _json(_ref("Signal"), "the signal"),
                    "400": ERRORS["400"],
                    "422": ERRORS["422"],
                    "503": _json(_ref("ErrorOut"), "no data for this region yet"),
                },
            }
        },
        "/api/v1/plan": {
            "post": {
                "summary": "Dry run: the best time and region for a job, its baseline and savings, and why",
                "requestBody": _body("PlanSpec"),
                "responses": {"200": _json(_ref("PlanOut"), "the plan"), **ERRORS},
            }
        },
        "/api/v1/jobs": {
            "post": {
                "summary": "Submit a job",
                "requestBody": _body("JobSpec"),
                "responses": {"201": _json(_ref("JobOut"), "the stored, scheduled job"), **ERRORS},
            },
            "get": {
                "summary": "List jobs",
                "parameters": [
                    _query("status", "pending, scheduled, running, completed, cancelled or failed"),
                    _query("region", "planned or allowed region"),
                    _query("q", "text in the name"),
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("JobOut")}, "jobs, newest first"),
                    "422": ERRORS["422"],
                },
            },
        },
        "/api/v1/jobs/{job_id}": {
            "get": {
                "summary": "One job",
                "parameters": [_id("job_id")],
                "responses": {"200": _json(_ref("JobOut"), "the job"), **not_found},
            }
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job",
                "parameters": [_id("job_id")],
                "responses": {
                    "200": _json(_ref("JobOut"), "the cancelled job"),
                    **not_found,
                    "409": _json(_ref("ErrorOut"), "the job has already finished"),
                },
            }
        },
        "/api/v1/assets": {
            "get": {
                "summary": "List compute assets",
                "responses": {"200": _json({"type": "array", "items": _ref("AssetOut")}, "assets")},
            },
            "post": {
                "summary": "Register a compute asset",
                "requestBody": _body("AssetSpec"),
                "responses": {"201": _json(_ref("AssetOut"), "the stored asset"), **ERRORS},
            },
        },
        "/api/v1/assets/{asset_id}": {
            "get": {
                "summary": "One compute asset",
                "parameters": [_id("asset_id")],
                "responses": {"200": _json(_ref("AssetOut"), "the asset"), **not_found},
            }
        },
        "/api/v1/decisions": {
            "get": {
                "summary": "Audit records, newest first (an operator sees those about their own jobs)",
                "parameters": [
                    _query(
                        "job_id", "only this job's decisions", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
                    ),
                    _query("kind", "plan, replan, dispatch, cancel, ..."),
                    _query("limit", "1-1000 (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {"200": _json(decisions, "the decisions"), "400": ERRORS["400"]},
            }
        },
    }
    conflict = {
        "409": _json(
            _ref("ErrorOut"),
            "cannot be placed as asked: counter-offers (a submitted job is "
            "stored as pending; accept one with POST .../accept)",
        )
    }
    paths["/api/v1/plan"]["post"]["responses"].update(conflict)
    paths["/api/v1/jobs"]["post"]["responses"].update(conflict)
    paths["/api/v1/jobs/{job_id}/accept"] = {
        "post": {
            "summary": "Accept one of a pending job's counter-offers",
            "parameters": [_id("job_id")],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["offer_id"],
                            "properties": {"offer_id": {"type": "string"}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("JobOut"), "the job, now scheduled"),
                **not_found,
                **conflict,
                "400": ERRORS["400"],
                "413": ERRORS["413"],
            },
        }
    }
    paths["/api/v1/jobs/{job_id}/complete"] = {
        "post": {
            "summary": "Report a running job finished (records the actual run)",
            "parameters": [_id("job_id")],
            "responses": {
                "200": _json(_ref("JobOut"), "the completed job"),
                **not_found,
                "409": _json(_ref("ErrorOut"), "the job is not running"),
            },
        }
    }
    paths["/api/v1/statistics"] = {
        "get": {
            "summary": "Per asset and overall: jobs by status, energy, kg CO2 and GBP planned and saved",
            "responses": {
                "200": _json({"type": "object", "required": ["overall", "assets", "no_asset"]}, "the figures")
            },
        }
    }
    open_operations = {("/api/v1/signals", "get"), ("/api/v1/plan", "post")}
    for path, operations in paths.items():
        for method, operation in operations.items():
            operation["responses"].update(COMMON)
            if (path, method) not in open_operations:
                operation["responses"].update(AUTH)
                operation["security"] = BEARER
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Compute-Energy Convergence API",
            "version": "1",
            "description": "Carbon- and price-aware placement of flexible compute in Great Britain. "
            "Times are ISO 8601 UTC; carbon in gCO2/kWh and kg; prices in p/kWh inc. VAT.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token from `flask --app app tokens create NAME`",
                }
            },
        },
    }
