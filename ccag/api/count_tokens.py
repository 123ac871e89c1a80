"""``POST /v1/messages/count_tokens`` through Bedrock's CountTokens API.

Claude Code's ``/context`` fires about a dozen of these at once, and not every
model or account can count on Bedrock. Whenever Bedrock cannot answer, the
client gets a local estimate instead of an error: a count is advice, and an
error here would break the user's view for nothing.
"""

from __future__ import annotations

import json
import logging

from ccag.anthropic.estimate import estimate_input_tokens
from ccag.anthropic.translate import translate_count_tokens
from ccag.api.responses import parse_json_body, send_error, send_json
from ccag.bedrock.errors import UpstreamError
from ccag.errors import ApiError
from ccag.server.types import Request, Responder
from ccag.services import Services

logger = logging.getLogger("ccag.count_tokens")

# CountTokens answers with one small JSON object.
MAX_COUNT_BODY_BYTES = 64 * 1024


class CountTokensRoute:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, request: Request, responder: Responder) -> None:
        try:
            count = await self._count(request)
        except ApiError as error:
            await send_error(request, responder, error)
            return
        await send_json(responder, 200, {"input_tokens": count})

    async def _count(self, request: Request) -> int:
        services = self.services
        services.authenticate(request)
        body = parse_json_body(request)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model: a model name is required")
        model = services.catalog.resolve(name, services.geo_prefix)
        upstream = services.upstream
        memory_key = upstream.capability_key(model.bedrock_id)
        counted_body = translate_count_tokens(
            body, request.headers.get("anthropic-beta"), model, services.verdicts(memory_key)
        )

        try:
            async with upstream.count_tokens(model, counted_body) as response:
                raw = await response.read_all(MAX_COUNT_BODY_BYTES)
                if response.status == 200:
                    count = json.loads(raw).get("inputTokens")
                    if isinstance(count, int) and count >= 0:
                        return count
                logger.debug(
                    "%s: CountTokens answered %d; using a local estimate",
                    request.request_id, response.status,
                )
        except (UpstreamError, ValueError, AttributeError) as exc:
            logger.debug("%s: CountTokens failed (%r); using a local estimate",
                         request.request_id, exc)
        return estimate_input_tokens(body)
