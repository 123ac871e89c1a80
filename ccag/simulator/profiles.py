"""ListInferenceProfiles of the Bedrock control plane, for the known models.

Every known foundation model gets a system-defined cross-region profile for
each geography offered in the simulator's region (``us.``, ``eu.``,
``global.``...), listed in a stable order and paged with ``maxResults`` and an
opaque ``nextToken``, as ``GET /inference-profiles`` does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ccag.simulator.catalog import SimModel, offered_prefixes
from ccag.simulator.errors import validation_error

ACCOUNT_ID = "123456789012"
"""The account the simulator pretends to be (AWS's documentation example)."""

DEFAULT_MAX_RESULTS = 1000
"""What Bedrock returns when ``maxResults`` is not given (its maximum)."""

_CREATED_AT = "2025-01-01T00:00:00Z"

# The source regions a geography's profile routes to.
_REGIONS_BY_GEO: dict[str, tuple[str, ...]] = {
    "us": ("us-east-1", "us-east-2", "us-west-2"),
    "eu": ("eu-central-1", "eu-west-1", "eu-west-3"),
    "apac": ("ap-northeast-1", "ap-southeast-1", "ap-southeast-2"),
    "jp": ("ap-northeast-1", "ap-northeast-3"),
    "au": ("ap-southeast-2", "ap-southeast-4"),
    "us-gov": ("us-gov-west-1", "us-gov-east-1"),
}


def _profile(prefix: str, model_id: str, region: str) -> dict[str, Any]:
    regions = _REGIONS_BY_GEO.get(prefix, (region,))
    readable = model_id.removeprefix("anthropic.").replace(":", "-").replace(".", "-")
    return {
        "inferenceProfileName": f"{prefix.upper()} {readable}",
        "description": f"Routes requests to {model_id} in {', '.join(regions)}.",
        "createdAt": _CREATED_AT,
        "updatedAt": _CREATED_AT,
        "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:inference-profile/{prefix}.{model_id}",
        "models": [{"modelArn": f"arn:aws:bedrock:{source}::foundation-model/{model_id}"} for source in regions],
        "inferenceProfileId": f"{prefix}.{model_id}",
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    }


def _application_profile(name: str, model_id: str, region: str) -> dict[str, Any]:
    profile_id = name.rsplit("/", 1)[-1]
    return {
        "inferenceProfileName": profile_id,
        "createdAt": _CREATED_AT,
        "updatedAt": _CREATED_AT,
        "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:application-inference-profile/{profile_id}",
        "models": [{"modelArn": f"arn:aws:bedrock:{region}::foundation-model/{model_id}"}],
        "inferenceProfileId": profile_id,
        "status": "ACTIVE",
        "type": "APPLICATION",
    }


def all_profiles(
    models: Iterable[SimModel], region: str, application_profiles: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Every profile the simulator offers in ``region``, system-defined first."""
    profiles = [
        _profile(prefix, model.bedrock_id, region)
        for model in sorted(models, key=lambda model: model.bedrock_id)
        for prefix in offered_prefixes(model, region)
    ]
    profiles += [
        _application_profile(name, model_id, region)
        for name, model_id in sorted(application_profiles.items())
        if not name.startswith("arn:")
    ]
    return profiles


def _decode_token(token: str) -> int:
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise validation_error("The provided pagination token is invalid.") from None
    if offset < 0:
        raise validation_error("The provided pagination token is invalid.")
    return offset


def list_inference_profiles(query: str, profiles: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of ListInferenceProfiles for a request's query string.

    Raises:
        BedrockError: ``ValidationException`` for a bad ``maxResults``,
            ``type`` or ``nextToken``.
    """
    params = dict(parse_qsl(query, keep_blank_values=True))

    limit = DEFAULT_MAX_RESULTS
    if "maxResults" in params:
        raw = params["maxResults"]
        if not raw.isdigit() or not 1 <= int(raw) <= DEFAULT_MAX_RESULTS:
            raise validation_error(
                f"1 validation error detected: Value '{raw}' at 'maxResults' failed to satisfy constraint: "
                f"Member must have value between 1 and {DEFAULT_MAX_RESULTS}"
            )
        limit = int(raw)
    kind = params.get("type")
    if kind is not None and kind not in ("SYSTEM_DEFINED", "APPLICATION"):
        raise validation_error(
            f"1 validation error detected: Value '{kind}' at 'typeEquals' failed to satisfy constraint: "
            "Member must satisfy enum value set: [SYSTEM_DEFINED, APPLICATION]"
        )
    offset = _decode_token(params["nextToken"]) if "nextToken" in params else 0

    selected = [profile for profile in profiles if kind is None or profile["type"] == kind]
    page: dict[str, Any] = {"inferenceProfileSummaries": selected[offset : offset + limit]}
    if offset + limit < len(selected):
        page["nextToken"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
    return page
