"""``GET /v1/models``: the models this gateway can serve, in Anthropic's format."""

from __future__ import annotations

from ccag.api.responses import send_error, send_json
from ccag.errors import ApiError
from ccag.server.types import Request, Responder
from ccag.services import Services


class ModelListRoute:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, request: Request, responder: Responder) -> None:
        try:
            self.services.authenticate(request)
        except ApiError as error:
            await send_error(request, responder, error)
            return
        # What the endpoints can serve (discovery), else the model table.
        models = self.services.upstream.list_models()
        await send_json(
            responder,
            200,
            {
                "data": models,
                "has_more": False,
                "first_id": models[0]["id"] if models else None,
                "last_id": models[-1]["id"] if models else None,
            },
        )
