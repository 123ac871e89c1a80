"""What Bedrock has refused, remembered for a while.

The data file's allowlists are ccag's best knowledge, but Bedrock changes
under it. When Bedrock answers a ValidationException that names a beta or a
field we sent, the caller removes it, retries once, and remembers the refusal
here so later requests leave it out from the start. Memories expire after
``ttl_seconds`` so that a feature Bedrock starts accepting comes back.

Keys are strings the caller chooses (for example ``endpoint/model-id``), so
one endpoint's refusals do not affect another's. Pure: every method takes
``now`` (seconds, any monotonic or wall clock) from the caller.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ccag.bedrock import facts as bedrock

if TYPE_CHECKING:
    from ccag.anthropic.translate import BedrockRequest

Kind = Literal["beta", "field"]

# Remove every beta (except the 1M-context one the client explicitly asked
# for): Bedrock's "invalid beta flag" does not say which one it refused.
ALL_BETAS = "*"

# Distinct keys remembered; past this the key that expires soonest is
# forgotten, so a client cycling through model ARNs cannot grow memory.
MAX_KEYS = 1024

# Distinct names remembered per key and kind, for the same reason.
MAX_NAMES_PER_KEY = 64


@attrs.frozen
class Verdicts:
    """The refusals in force for one key, as translation consumes them."""

    betas: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()

    @property
    def drops_all_betas(self) -> bool:
        return ALL_BETAS in self.betas


NO_VERDICTS = Verdicts()


@attrs.frozen
class Rejection:
    """A refusal read from a ValidationException.

    Attributes:
        kind: ``"beta"`` or ``"field"``.
        name: the beta, ``"*"`` for an unnamed beta refusal, or the field path
            (``context_management``, ``output_config.effort``,
            ``tools.defer_loading``).
    """

    kind: Kind
    name: str


class CapabilityMemory:
    """Refused betas and fields per key, each forgotten after ``ttl_seconds``.

    Args:
        ttl_seconds: how long one refusal is remembered.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        # key -> kind -> name -> expiry time
        self._entries: dict[str, dict[str, dict[str, float]]] = {}

    def remember(self, model_key: str, kind: Kind, name: str, now: float) -> None:
        """Record that Bedrock refused ``name`` for ``model_key``."""
        if model_key not in self._entries and len(self._entries) >= MAX_KEYS:
            self._forget_expired(now)
            if len(self._entries) >= MAX_KEYS:
                soonest = min(self._entries, key=lambda k: self._latest_expiry(k))
                del self._entries[soonest]
        names = self._entries.setdefault(model_key, {}).setdefault(kind, {})
        if name not in names and len(names) >= MAX_NAMES_PER_KEY:
            del names[min(names, key=names.__getitem__)]
        names[name] = now + self.ttl_seconds

    def rejected_betas(self, model_key: str, now: float) -> frozenset[str]:
        return self._live(model_key, "beta", now)

    def rejected_fields(self, model_key: str, now: float) -> frozenset[str]:
        return self._live(model_key, "field", now)

    def verdicts(self, model_key: str, now: float) -> Verdicts:
        """The refusals in force for ``model_key`` at ``now``."""
        if model_key not in self._entries:
            return NO_VERDICTS
        return Verdicts(
            betas=self.rejected_betas(model_key, now),
            fields=self.rejected_fields(model_key, now),
        )

    def snapshot(self, now: float) -> dict[str, dict[str, dict[str, float]]]:
        """Live refusals with the seconds each has left, for an admin view."""
        self._forget_expired(now)
        return {
            key: {
                kind: {name: round(expiry - now, 3) for name, expiry in names.items()}
                for kind, names in kinds.items()
            }
            for key, kinds in self._entries.items()
        }

    def _live(self, model_key: str, kind: str, now: float) -> frozenset[str]:
        names = self._entries.get(model_key, {}).get(kind)
        if not names:
            return frozenset()
        return frozenset(name for name, expiry in names.items() if expiry > now)

    def _latest_expiry(self, model_key: str) -> float:
        kinds = self._entries[model_key]
        return max((e for names in kinds.values() for e in names.values()), default=0.0)

    def _forget_expired(self, now: float) -> None:
        for key in list(self._entries):
            kinds = self._entries[key]
            for kind in list(kinds):
                live = {n: e for n, e in kinds[kind].items() if e > now}
                if live:
                    kinds[kind] = live
                else:
                    del kinds[kind]
            if not kinds:
                del self._entries[key]


# "tools.11.custom.defer_loading: Extra inputs are not permitted"
_EXTRA_INPUT = re.compile(r"([A-Za-z_][\w.]*)\s*:\s*" + re.escape("Extra inputs are not permitted"))
# "#/tools/0: extraneous key [strict] is not permitted" or "#: extraneous key [metadata] ..."
_EXTRANEOUS_KEY = re.compile(r"#([\w/]*)\s*:\s*extraneous key \[([^\]]+)\]", re.IGNORECASE)

# Object-valued top-level fields whose keys are removed one by one; tools are
# a list of objects whose per-tool keys are removed from every tool.
_DICT_FIELDS = frozenset({"output_config", "context_management", "thinking", "tool_choice"})


def parse_validation_rejection(message: str, sent: BedrockRequest) -> Rejection | None:
    """Recognise a ValidationException that refused a beta or field we sent.

    Args:
        message: the exception's message text.
        sent: the request Bedrock refused.

    Returns:
        The refusal to remember and retry without, or None when the message
        names nothing we can remove (then the error goes to the client).
    """
    phrases = bedrock.validation_messages()
    lowered = message.lower()
    if phrases.unnamed_beta in lowered:
        for beta in sent.betas_sent:
            if beta.lower() in lowered:
                return Rejection("beta", beta)
        if sent.betas_sent:
            return Rejection("beta", ALL_BETAS)
        return None

    sent_body = _sent_body(sent)
    for path in _named_paths(message):
        field = _removable_field(path, sent_body)
        if field is not None:
            return Rejection("field", field)
    return None


def _named_paths(message: str) -> list[str]:
    paths = [match.group(1) for match in _EXTRA_INPUT.finditer(message)]
    for match in _EXTRANEOUS_KEY.finditer(message):
        parent = [part for part in match.group(1).split("/") if part]
        paths.append(".".join([*parent, match.group(2).strip()]))
    return paths


def _removable_field(path: str, body: dict[str, Any]) -> str | None:
    """The field name translation can leave out, if ``path`` names one we sent."""
    # Drop list indices and the tool-kind discriminator Bedrock puts in paths.
    parts = [p for p in path.split(".") if p and not p.isdigit() and p != "custom"]
    if not parts or parts[0] not in body:
        return None
    top = parts[0]
    if len(parts) == 1:
        if top in ("messages", "max_tokens", "anthropic_version"):
            return None
        return top
    if len(parts) == 2 and top == "tools":
        tools = body.get("tools")
        if isinstance(tools, list) and any(
            isinstance(tool, dict) and parts[1] in tool for tool in tools
        ):
            return f"tools.{parts[1]}"
        return None
    if len(parts) == 2 and top in _DICT_FIELDS:
        value = body.get(top)
        if isinstance(value, dict) and parts[1] in value:
            return f"{top}.{parts[1]}"
    return None


def _sent_body(sent: BedrockRequest) -> dict[str, Any]:
    try:
        body = json.loads(sent.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
