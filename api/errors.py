"""JSON errors with stable codes: every failure is ``{"error": {"code": ..., "message": ...}}``.

Codes are part of the API contract (clients switch on them); messages are for people.
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

CODES = {
    "unauthenticated": "no bearer token was sent",
    "invalid_token": "the token is malformed, forged or expired",
    "token_reused": "a refresh token was used twice: its whole family is revoked",
    "bad_credentials": "wrong username or password",
    "too_many_attempts": "login throttled after repeated failures",
    "forbidden": "your role may not do this",
    "out_of_scope": "the org unit is outside the subtree you may see",
    "not_found": "no such resource (in your scope)",
    "invalid_input": "a parameter or body field is invalid",
    "invalid_cursor": "the pagination cursor is not one this API issued",
    "too_many_points": "the time range holds too many buckets: widen the bucket",
    "conflict": "the resource already exists or changed",
    "method_not_allowed": "the method is not allowed on this path",
    "unavailable": "a backing service is not reachable",
}


class ApiError(Exception):
    """An expected error: rendered as JSON with its HTTP status and stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        assert code in CODES, code
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ErrorDetail(BaseModel):
    code: str = Field(examples=["out_of_scope"], description="Stable machine-readable code")
    message: str = Field(examples=["org unit 'iahdrai-iadom' is outside your scope"])


class ErrorBody(BaseModel):
    error: ErrorDetail


def _resp(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "description": CODES.get(code, code),
        "content": {"application/json": {"example": {"error": {"code": code, "message": message}}}},
    }


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _resp(401, "unauthenticated", "a bearer token is required"),
    403: _resp(403, "forbidden", "role 'field' may not do this"),
    422: _resp(422, "invalid_input", "query.limit: Input should be less than or equal to 200"),
}
NOT_FOUND = {404: _resp(404, "not_found", "no such resource in your scope")}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON shape above."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_input")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(psycopg.errors.DataError)
    async def _data_error(_: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # e.g. a NUL byte or an out-of-range number that PostgreSQL refuses: bad input, not a 500
        return error_response(422, "invalid_input", "a value was refused by the database")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return error_response(422, "invalid_input", f"{where}: {err['msg']}"[:300])
