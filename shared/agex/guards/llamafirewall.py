"""LlamaFirewall's scanners in the chain: ``GuardSpec(use="llamafirewall:SCANNER")``.

``SCANNER`` is a ``llamafirewall.ScannerType`` by value or name (``regex``, ``hidden_ascii``,
``code_shield``, ``prompt_guard``, ``agent_alignment``, ``pii_detection``) or the name of a scanner
registered with ``llamafirewall.register_llamafirewall_scanner``. Each channel is scanned as the
message of the matching role: the user's input as USER, a tool's output as TOOL, the model's output and
its tool calls as ASSISTANT. ALLOW allows; HUMAN_IN_THE_LOOP_REQUIRED holds a tool call for approval
(elsewhere it takes the configured action); BLOCK takes the configured action (default ``block``).

LlamaFirewall is optional. Its package declares torch and transformers for the scanners with models;
``regex``, ``hidden_ascii`` and registered scanners without models need neither, so a light install is
``pip install --no-deps llamafirewall==1.0.3``. Scanners with models need their own dependencies
(``code_shield``: codeshield; ``prompt_guard``: torch, transformers and the model's download;
``agent_alignment`` and ``pii_detection``: openai and an LLM endpoint) and are checked for at build.

The verdict's reason keeps the scanner's first words only: several scanners quote what they scanned
(the prompt-guard scanner the whole text, the hidden-ASCII scanner the decoded characters), and a
reason is recorded in events and alerts, which must not carry content.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
from typing import Any

from agex.core.errors import ConfigurationError
from agex.core.guard import ACTIONS_BY_CHANNEL, Action, Channel, Content, GuardSpec, Verdict, allow

NAME = "llamafirewall"
INSTALL = "pip install --no-deps llamafirewall==1.0.3"
DEFAULT_CHANNELS = frozenset({Channel.user_input, Channel.tool_output})
_NEEDS = {"code_shield": ("codeshield",), "prompt_guard": ("torch", "transformers"),
          "agent_alignment": ("openai",), "pii_detection": ("openai",)}
_ROLES = {Channel.user_input: "USER", Channel.tool_output: "TOOL", Channel.model_output: "ASSISTANT",
          Channel.tool_args: "ASSISTANT"}
_REASON_CHARS = 120


def _library() -> Any:
    try:
        import llamafirewall
    except ImportError as e:
        raise ConfigurationError(f"guard llamafirewall: the llamafirewall package is not installed ({INSTALL}; "
                                 "scanners with models need their own dependencies too)") from e
    return llamafirewall


def _scanner(lf: Any, name: str) -> Any:
    from llamafirewall.llamafirewall import custom_scanner_registry

    if name in custom_scanner_registry:
        return name
    by_name = {t.value: t for t in lf.ScannerType} | {t.name: t for t in lf.ScannerType}
    if name not in by_name:
        known = sorted({t.value for t in lf.ScannerType} | set(custom_scanner_registry))
        raise ConfigurationError(f"guard llamafirewall:{name}: no such scanner (known: {', '.join(known)}; register "
                                 "your own with llamafirewall.register_llamafirewall_scanner)")
    scanner = by_name[name]
    missing = [m for m in _NEEDS.get(scanner.value, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(f"guard llamafirewall:{name}: the scanner needs {', '.join(missing)}, which is not "
                                 "installed")
    return scanner


def _reason(scanner: str, decision: str, reason: str) -> str:
    head = reason.strip().splitlines()[0] if reason.strip() else ""
    if not head.startswith("Regex match: "):  # the regex scanner names its pattern, not what matched
        head = head.split(":", 1)[0]
    return f"LlamaFirewall {scanner}: {head[:_REASON_CHARS] or decision}"


class LlamaFirewallGuard:
    def __init__(self, scanner: str, channels: frozenset[Channel], action: Action,
                 threshold: float | None = None) -> None:
        lf = _library()
        self.name = f"{NAME}:{scanner}"
        self.scanner, self.channels, self.action, self.threshold = scanner, channels, action, threshold
        self._lf = lf
        kind = _scanner(lf, scanner)
        roles = {getattr(lf.Role, _ROLES[c]) for c in channels}
        self._firewall = lf.LlamaFirewall({role: [kind] for role in roles})

    def check(self, content: Content) -> Verdict:
        lf = self._lf
        role = getattr(lf.Role, _ROLES[content.channel])
        if content.channel == Channel.tool_args:
            call = {"id": content.call_id, "name": content.tool, "arguments": content.value}
            message = lf.Message(role=role, content=json.dumps(call, ensure_ascii=False, default=str),
                                 tool_calls=[call])
        else:
            message = lf.Message(role=role, content=content.text)
        result = self._scan(message)
        score = float(result.score)
        decision = result.decision
        if decision == lf.ScanDecision.ALLOW or (self.threshold is not None and score < self.threshold):
            return allow(self.name, score)
        if decision == lf.ScanDecision.HUMAN_IN_THE_LOOP_REQUIRED and content.channel == Channel.tool_args:
            action = Action.approve
        else:
            action = self.action
        return Verdict(action, self.name, reason=_reason(self.scanner, decision.value, str(result.reason)),
                       score=score, findings=(self.scanner,))

    def _scan(self, message: Any) -> Any:
        # LlamaFirewall.scan runs its scanners with asyncio.run, which refuses to run inside an event loop
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._firewall.scan(message)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(self._firewall.scan, message).result()


def from_spec(spec: GuardSpec) -> LlamaFirewallGuard:
    _, _, scanner = spec.use.partition(":")
    if not scanner:
        raise ConfigurationError("guard llamafirewall: name the scanner, as in llamafirewall:regex")
    where = f"guard {spec.use}"
    channels = frozenset(spec.channels) if spec.channels is not None else DEFAULT_CHANNELS
    if not channels:
        raise ConfigurationError(f"{where}: channels must not be empty")
    action = spec.action or Action.block
    refused = sorted(c.value for c in channels if action not in ACTIONS_BY_CHANNEL[c])
    if refused:
        raise ConfigurationError(f"{where}: action {action.value} is not possible on {', '.join(refused)}")
    if spec.options:
        raise ConfigurationError(f"{where}: it takes no options (got {sorted(spec.options)})")
    return LlamaFirewallGuard(scanner, channels, action, spec.threshold)
