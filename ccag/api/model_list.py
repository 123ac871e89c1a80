"""``GET /v1/models`` and ``GET /v1/models/{id}`` in Anthropic's format.

``{id}`` is any name ``/v1/messages`` accepts for a listed model: its id, an
alias, a dated name, a Bedrock id, with or without ``[1m]``.

The list is what the endpoints can serve (discovery included), newest first,
paged the way Anthropic's API pages it: ``limit`` (1 to 1000; without it the
whole list, which is short), ``after_id`` and ``before_id``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from ccag.api.responses import send_error, send_json
from ccag.errors import ApiError, invalid_request, not_found
from ccag.server.types import Request, Responder
from ccag.services import Services

MAX_PAGE = 1000
MODEL_PATH_PREFIX = "/v1/models/"


class ModelListRoute:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, request: Request, responder: Responder) -> None:
        try:
            self.services.authenticate(request)
            document = self._answer(request)
        except ApiError as error:
            await send_error(request, responder, error)
            return
        await send_json(responder, 200, document)

    def _answer(self, request: Request) -> dict[str, Any]:
        models: list[dict[str, Any]] = self.services.upstream.list_models()
        path = request.path.rstrip("/")
        if path.startswith(MODEL_PATH_PREFIX):
            wanted = urllib.parse.unquote(path[len(MODEL_PATH_PREFIX) :])
            return self._model(models, wanted)
        return _page(models, urllib.parse.parse_qs(request.query))

    def _model(self, models: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
        """The listed model ``wanted`` names: its id, or any name
        ``/v1/messages`` resolves to it (alias, dated name, ``[1m]``...).

        Like Anthropic's API, an alias answers with the model it points to.
        A model the endpoints do not serve is not found, as it is not listed.
        """
        by_id = {model["id"]: model for model in models}
        if wanted in by_id:
            return by_id[wanted]

        canonical = self.services.catalog.known_canonical(wanted)
        if canonical is not None and canonical in by_id:
            return by_id[canonical]
        raise not_found(f"model: {wanted[:200]}")


def _page(models: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    ids = [model["id"] for model in models]
    start, end = 0, len(models)
    after = query.get("after_id", [None])[0]
    before = query.get("before_id", [None])[0]
    if after is not None:
        if after not in ids:
            raise invalid_request(f"after_id: no model {after[:200]!r}")
        start = ids.index(after) + 1
    if before is not None:
        if before not in ids:
            raise invalid_request(f"before_id: no model {before[:200]!r}")
        end = ids.index(before)

    limit_text = query.get("limit", [None])[0]
    window = models[start:end]
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise invalid_request(f"limit: must be a whole number from 1 to {MAX_PAGE}")
        limit = int(limit_text)
        page = window[-limit:] if before is not None and after is None else window[:limit]
    else:
        page = window

    first_index = start + window.index(page[0]) if page else start
    has_more = bool(page) and (
        first_index + len(page) < end if not (before is not None and after is None)
        else first_index > start
    )
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
