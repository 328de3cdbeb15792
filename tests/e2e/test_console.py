"""The browser console on the local stack, driven in Debian's Chromium by Playwright: a refund followed live,
refused to its own requester under four eyes and approved by a manager from the inbox; markup in a tool's
output and an answer shown as text; the model's text as it is written; another tenant seeing nothing; a
timeline of 500 steps staying quick; on an embedded system whose agent keeps memory, what a run recalled and
learned, a memory conflict decided, and a user's memories listed and erased. The test takes the screenshots of
the main pages; with AGEX_CONSOLE_SCREENSHOTS=docs/images it writes them there (docs/images/console-*.png), else in
a temporary directory, so a test run leaves the repository as it was (the memory pages' only with the variable)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agex.app.console.server import CSP
from agex.core.agent import Agent
from agex.core.memory import Conflicts, MemoryPolicy
from agex.dev.stack import REPO

from .agents import XSS
from .conftest import E2E
from .test_approvals import REFUND_OVER_LIMIT
from .test_support_agent import REFUND, refunds_of

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

    from agex.app.runtime import Runtime
    from agex.core.memory import MemoryRecord
    from agex.core.run import RunHead
    from agex.dev.embedded import Embedded

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
IMAGES = (REPO / os.environ["AGEX_CONSOLE_SCREENSHOTS"] if os.environ.get("AGEX_CONSOLE_SCREENSHOTS")
          else Path(tempfile.gettempdir()) / "agex-console-screenshots")
DOC_SHOTS = bool(os.environ.get("AGEX_CONSOLE_SCREENSHOTS"))
"""The memory page's screenshots are taken for the documentation only."""
FIRST_LOAD_BUDGET_S = 3.0
"""Loose on purpose (shared CI machines): locally the sign-in page shows in well under a second."""


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright: Playwright's own browsers are never downloaded."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise AssertionError("the console tests need Playwright: .venv/bin/pip install playwright==1.65.2 "
                             "(no `playwright install`: they drive /usr/bin/chromium)") from e
    if not CHROMIUM.exists():
        raise AssertionError(f"the console tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        from playwright.sync_api import expect as playwright_expect

        playwright_expect.set_options(timeout=20_000)
        yield launched


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


class Console:
    """A browser tab on the console, recording what must never happen: a Content-Security-Policy violation
    (an inline script or style) or an uncaught error."""

    def __init__(self, browser: Browser, base_url: str, viewport: ViewportSize = DESKTOP) -> None:
        self.context: BrowserContext = browser.new_context(base_url=base_url, viewport=viewport)
        self.context.set_default_timeout(20_000)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.problems.append(message.text)

    def sign_in(self, token: str, principal: str) -> None:
        page = self.page
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.locator("header .principal")).to_have_text(principal)

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        expect(self.page.get_by_label("Access token")).to_be_visible()

    def shot(self, name: str) -> None:
        IMAGES.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(IMAGES / f"console-{name}.png"))

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@contextmanager
def console(browser: Browser, e2e: E2E, viewport: ViewportSize = DESKTOP) -> Iterator[Console]:
    tab = Console(browser, e2e.stack.api_url, viewport)
    try:
        yield tab
    finally:
        tab.close()


def signed_in(browser: Browser, e2e: E2E, token: str, principal: str) -> Any:
    tab = Console(browser, e2e.stack.api_url)
    tab.page.goto("/console/")
    tab.sign_in(token, principal)
    return tab


def test_a_refund_followed_refused_to_its_requester_and_approved_by_a_manager(e2e: E2E, browser: Browser) -> None:
    with console(browser, e2e) as tab:
        page = tab.page
        started = time.monotonic()
        response = page.goto("/console/")
        expect(page.get_by_label("Access token")).to_be_visible()
        first_load = time.monotonic() - started
        timing = json.loads(page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])"))
        print(f"console first page: sign-in form shown {first_load * 1000:.0f} ms after navigating "
              f"(DOMContentLoaded at {timing['domContentLoadedEventEnd']:.0f} ms, "
              f"load at {timing['loadEventEnd']:.0f} ms)")
        assert first_load < FIRST_LOAD_BUDGET_S, f"the first page took {first_load:.2f} s"
        assert response is not None and response.headers["content-security-policy"] == CSP

        # the requester follows the run from the list of runs, live
        tab.sign_in("dev-token", "dev@example.com")
        expect(page.locator("header .tenant")).to_have_text("dev")
        e2e.wait(e2e.client.start_run("support", REFUND)["run_id"])  # one that needs no approval, for contrast
        run_id = e2e.client.start_run("support", REFUND_OVER_LIMIT)["run_id"]
        row = page.locator(f'tr[data-run="{run_id}"]')
        expect(row).to_be_visible(timeout=15_000)  # the list refreshes itself
        tab.shot("runs")
        page.get_by_label("Agent").select_option("support")
        page.get_by_label("Status").select_option("waiting_approval")
        page.get_by_role("button", name="Apply").click()
        expect(page).to_have_url(re.compile(r"/console/runs\?agent=support&status=waiting_approval$"))
        expect(page.locator("tbody tr").filter(has_not_text="waiting approval")).to_have_count(0)
        expect(row).to_be_visible()
        row.get_by_role("link", name=run_id).click()
        expect(page).to_have_url(re.compile(f"/console/runs/{run_id}$"))
        expect(page.locator('.step[data-step="1"] summary')).to_contain_text("lookup_order", timeout=30_000)
        expect(page.locator('.step[data-step="2"] summary')).to_contain_text("check_refund_policy", timeout=30_000)
        expect(page.locator('.step[data-step="3"] summary')).to_contain_text("approval requested", timeout=30_000)
        expect(page.locator(".run-head .badge")).to_have_text("waiting approval", timeout=15_000)
        expect(page.locator(".stream-state")).to_have_text("Live")
        step3 = page.locator('.step[data-step="3"]')
        expect(step3).to_contain_text('"amount_usd": 89')  # the call, with its arguments
        expect(step3).to_contain_text("Refunds over $50 need a support lead's sign-off.")
        expect(page.locator(".run-head")).to_contain_text("dev@example.com")
        expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
        expect(page.locator(".links")).to_contain_text("Log lines")
        tab.shot("run")
        page.set_viewport_size(PHONE)
        page.evaluate("window.scrollTo(0, 0)")
        tab.shot("run-phone")
        page.set_viewport_size(DESKTOP)

        # the requester may not decide (four eyes, and not one of the approvers): refused, and the page says why
        step3.get_by_role("link", name="Open the approval").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("issue_refund")
        expect(page.locator("main")).to_contain_text("yes: the requester may not decide")
        approval_id = page.url.rsplit("/", 1)[1]
        page.get_by_role("button", name="Approve").click()
        refusal = page.get_by_role("alert")
        expect(refusal).to_contain_text("You may not decide this approval")
        expect(refusal).to_contain_text("dev@example.com is not an approver")
        expect(refusal).to_contain_text("manager@example.com")
        assert e2e.manager.approval(approval_id)["status"] == "pending"

        # four eyes proper: dev is an approver of payer's payments, but not of a payment dev asked for
        paying = e2e.client.start_run("payer", "pay acme 250")["run_id"]
        deadline = time.monotonic() + 30
        while not (held := [a for a in e2e.client.approvals("pending") if a["run_id"] == paying]):
            assert time.monotonic() < deadline, "the payment never waited for approval"
            time.sleep(0.2)
        page.goto(f"/console/approvals/{held[0]['approval_id']}")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("alert")).to_contain_text("four-eyes policy")
        assert e2e.client.approval(held[0]["approval_id"])["status"] == "pending"
        e2e.client.cancel(paying)

        # signing out forgets the session; nothing of it was kept in the page's storage
        tab.sign_out()
        assert page.request.get("/console/session").status == 401
        assert not [c for c in tab.context.cookies() if c["name"] == "agex_session"]
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0

        # the manager signs in from the keyboard and decides from the inbox
        page.get_by_label("Access token").fill("manager-token")
        page.get_by_label("Access token").press("Enter")
        expect(page.locator("header .principal")).to_have_text("manager@example.com")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Approvals").click()
        card = page.locator(f'li[data-approval="{approval_id}"]')
        expect(card).to_contain_text("issue_refund")
        expect(card).to_contain_text("dev@example.com")
        expect(card).to_contain_text("Four eyes")
        expect(card).to_contain_text('"amount_usd": 89')
        tab.shot("approvals")
        card.get_by_role("link", name="Review and decide").click()
        expect(page.get_by_label("Arguments to run with (JSON)")).to_have_value(re.compile('"order_id": "A-1042"'))
        page.get_by_label("Comment").fill("customer is a regular")
        tab.shot("approval")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("status").filter(has_text="Decided: approved by manager@example.com")).to_be_visible(
            timeout=30_000)
        page.get_by_role("link", name=run_id).click()
        expect(page.locator(".run-head .badge")).to_have_text("succeeded", timeout=60_000)
        expect(page.locator('[data-testid="result"]')).to_contain_text("refunded the full $89.00")
        expect(page.locator('.step[data-step="3"] summary')).to_contain_text("approved")
        expect(page.locator(".stream-state")).to_have_text("Run ended")
        assert len(refunds_of(e2e, run_id)) == 1
        decided = e2e.manager.approval(approval_id)
        assert (decided["status"], decided["decided_by"], decided["comment"]) == (
            "approved", "manager@example.com", "customer is a regular")

        # the agent: its versions, policies and spend per day, drawn without a library
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Agents").click()
        page.get_by_role("link", name="support", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("support")
        expect(page.locator("svg.chart rect.bar")).to_have_count(30)
        expect(page.locator("#versions-title + div")).to_contain_text("sha256:")
        expect(page.get_by_role("heading", name=re.compile("issue_refund when amount_usd > 50"))).to_be_visible()
        expect(page.locator("#metrics-title + div")).to_contain_text("succeeded")
        tab.shot("agent")


def test_markup_in_a_tool_output_and_an_answer_shows_as_text(e2e: E2E, browser: Browser) -> None:
    run_id = e2e.client.start_run("echo", f"echo this page {XSS}")["run_id"]
    assert e2e.wait(run_id)["status"] == "succeeded"
    tab = signed_in(browser, e2e, "dev-token", "dev@example.com")
    try:
        page = tab.page
        expect(page.locator(f'tr[data-run="{run_id}"] .input-cell')).to_have_attribute(
            "title", f"echo this page {XSS}")
        page.goto(f"/console/runs/{run_id}")
        expect(page.locator('[data-testid="result"]')).to_contain_text(
            'Here it is: <img src=x onerror="window.__xss=1"><script>window.__xss=2</script> done.')
        expect(page.locator(".run-head")).to_contain_text(f"echo this page {XSS}")
        step1 = page.locator('.step[data-step="1"]')
        step1.locator("summary").click()  # earlier steps are folded
        expect(step1).to_contain_text('"body": "<b>bold</b> <img src=x onerror=\\"window.__xss=1\\">')
        expect(step1).to_contain_text("<script>window.__xss=2</script>")
        page.wait_for_timeout(500)  # an injected onerror would have fired by now
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert page.locator("main img, main script, main b").count() == 0
    finally:
        tab.close()


def test_the_model_text_shows_as_it_is_written_then_the_recorded_answer(e2e: E2E, browser: Browser) -> None:
    tab = signed_in(browser, e2e, "dev-token", "dev@example.com")
    try:
        page = tab.page
        run_id = e2e.client.start_run("storyteller", "tell me about lighthouses")["run_id"]
        page.goto(f"/console/runs/{run_id}")
        writing = page.locator('.step[data-step="2"] .live .streaming')
        expect(writing).to_contain_text("Once upon a time", timeout=30_000)
        partial = writing.inner_text()
        expect(page.locator('.step[data-step="2"] .live')).to_be_hidden(timeout=30_000)
        expect(page.locator('.step[data-step="2"] .ev-model_response')).to_contain_text("sail safely home")
        final = e2e.wait(run_id)
        assert final["result"].startswith(partial) and len(partial) < len(final["result"]), partial
        expect(page.locator('[data-testid="result"]')).to_contain_text("sail safely home to the harbour")
    finally:
        tab.close()


def test_another_tenant_sees_none_of_the_runs_and_approvals(e2e: E2E, browser: Browser) -> None:
    run_id = e2e.client.start_run("payer", "pay acme 250")["run_id"]
    e2e.wait_status(run_id, "waiting_approval")
    (approval,) = [a for a in e2e.manager.approvals("pending") if a["run_id"] == run_id]
    tab = signed_in(browser, e2e, "acme-token", "ops@acme.test")
    try:
        page = tab.page
        expect(page.locator("header .tenant")).to_have_text("acme")
        expect(page.locator('[aria-label="Runs"][aria-busy="false"]')).to_be_visible()
        assert page.locator(f'tr[data-run="{run_id}"]').count() == 0
        page.goto("/console/approvals")
        expect(page.locator('.cards[aria-busy="false"]')).to_be_attached()
        assert page.locator(f'li[data-approval="{approval["approval_id"]}"]').count() == 0
        page.goto(f"/console/runs/{run_id}")
        expect(page.get_by_role("alert")).to_contain_text("No run with this id in your tenant")
        page.goto(f"/console/approvals/{approval['approval_id']}")
        expect(page.get_by_role("alert")).to_contain_text("No approval with this id in your tenant")
        assert page.request.get(f"/console/api/runs/{run_id}/links").status == 404
    finally:
        tab.close()
        e2e.client.cancel(run_id)


def test_a_timeline_of_500_steps_shows_its_last_100_and_stays_quick(e2e: E2E, browser: Browser) -> None:
    tab = signed_in(browser, e2e, "dev-token", "dev@example.com")
    try:
        page = tab.page
        # the run page's timeline, fed 2,500 events at once as a finished run's stream delivers them
        shown = page.evaluate("""async () => {
            const {Timeline} = await import("/console/static/timeline.js");
            const timeline = new Timeline();
            document.querySelector("main").replaceChildren(timeline.el);
            const started = performance.now();
            let seq = 0;
            const at = new Date().toISOString();
            const event = (step, kind, data) => timeline.push({seq: ++seq, step, kind, at, data});
            for (let step = 1; step <= 500; step++) {
                event(step, "step_started", {attempt: 0, resumed: false});
                event(step, "model_response", {model: "m", message: {role: "model", parts: [
                    {function_call: {id: `c${step}`, name: "tick", args: {n: step}}}]},
                    usage: {input_tokens: 100, output_tokens: 10, cost_usd: 0.0001}});
                event(step, "tool_intent", {call_id: `c${step}`, name: "tick"});
                event(step, "tool_result", {call_id: `c${step}`, name: "tick", ok: true, output: {n: step}});
                event(step, "step_completed", {tool_calls: 1, done: false});
            }
            const pushed = performance.now() - started;
            timeline.flush();  // what the next animation frame does
            return {ms: performance.now() - started, pushed, steps: document.querySelectorAll(".steps > li").length,
                    events: document.querySelectorAll(".events > li").length,
                    first: document.querySelector(".steps > li").dataset.step};
        }""")
        print(f"console timeline: 2,500 events over 500 steps taken in {shown['pushed']:.0f} ms and rendered "
              f"in {shown['ms'] - shown['pushed']:.0f} ms more")
        assert shown["steps"] == 100 and shown["first"] == "401" and shown["events"] == 5, shown
        assert shown["ms"] < 1000, shown
        earlier = page.get_by_role("button", name="Show earlier steps (400 not shown)")
        earlier.click()
        expect(page.locator(".steps > li")).to_have_count(200)
        expect(page.locator(".steps > li").first).to_have_attribute("data-step", "301")
    finally:
        tab.close()


def test_every_kind_of_event_reads_in_the_timeline(e2e: E2E, browser: Browser) -> None:
    tab = signed_in(browser, e2e, "dev-token", "dev@example.com")
    try:
        page = tab.page
        page.evaluate("""async () => {
            const {Timeline} = await import("/console/static/timeline.js");
            const timeline = new Timeline();
            document.querySelector("main").replaceChildren(timeline.el);
            let seq = 0;
            const at = "2026-01-01T00:00:00Z";
            const event = (step, kind, data) => timeline.push({seq: ++seq, step, kind, at, data});
            event(1, "step_started", {attempt: 1, resumed: true});
            event(1, "model_response", {model: "gemini-2.5-flash-lite", message: {role: "model", parts: [{text: "hello"}]},
                route: {model: "gemini-2.5-flash-lite", reason: "fallback after gemini-2.5-flash (unavailable)",
                        failed: [{model: "gemini-2.5-flash", reason: "unavailable"}]},
                usage: {input_tokens: 12, output_tokens: 3, cost_usd: 0.00001}});
            event(1, "guard_verdict", {channel: "tool_output", action: "redact", tool: "lookup", verdicts: [
                {guard: "pii", action: "redact", reason: "an email address", score: 0.9, findings: [{}]}]});
            event(2, "sweep_reenqueued", {generation: 2});
            event(2, "run_migrated", {from_version: "1", to_version: "2", rule: "v1-to-v2"});
            event(2, "approval_requested", {approval_id: "apr_x", kind: "reconcile", name: "pay", approvers: []});
            event(2, "approval_decided", {approval_id: "apr_x", kind: "reconcile", decision: "done", by: "ops@example.com", comment: "it ran"});
            event(2, "tool_late_result", {name: "pay", ok: true, output: {paid: 1}});
            event(2, "tool_deferred", {name: "pay", retry_at: at, reason: "rate limited"});
            event(2, "timer_set", {wake_at: at, reason: "poll later"});
            event(2, "a_kind_from_later", {x: 1});
            event(1, "memory_recalled", {memories: [
                {id: "mem_1", text: "Prefers to be contacted by email.", score: 0.83, trusted: true, kind: "preference"},
                {id: "mem_2", text: '<img src=x onerror="window.__xss=3">Lives in Lyon.', score: 0.61, trusted: false,
                 kind: "fact"}]});
            event(3, "run_cancelled", {by: "dev@example.com"});
            const fact = {kind: "preference", about: "user", sources: [2], injection_score: 0.01};
            event(3, "memory_learned", {model: "gemini-2.5-flash-lite",
                facts: [{...fact, key: "contact_channel", value: "phone", text: "Prefers phone calls.", confidence: 0.9,
                         trusted: false}],
                left_out: [{...fact, key: "mood", value: "grumpy", text: "Was grumpy today.", confidence: 0.3,
                            trusted: true, reason: "confidence 0.3 under 0.6"}],
                usage: {input_tokens: 900, output_tokens: 60, cost_usd: 0.0001}});
            event(3, "approval_decided", {approval_id: "apr_m", kind: "memory", decision: "reject",
                                          by: "lead@example.com", comment: "the old number still works"});
            timeline.flush();
            for (const details of document.querySelectorAll(".step details")) details.open = true;
        }""")
        steps = page.locator(".steps")
        for text in ["Routed to gemini-2.5-flash-lite: fallback after gemini-2.5-flash (unavailable)", "guard redact",
                     "pii redact: an email address (score 0.9)", "resumes the step", "re-enqueued a lost step task",
                     "version 1 → 2 (v1-to-v2)", "may or may not have run", "done by ops@example.com", "it ran",
                     "late result", "rate limited", "poll later", "a_kind_from_later", "cancelled by dev@example.com",
                     "2 memories put in the run's context", "Prefers to be contacted by email.",
                     '<img src=x onerror="window.__xss=3">Lives in Lyon.', "1 fact kept, 1 left out · by gemini-2.5",
                     "contact_channel = phone", "Prefers phone calls.", "confidence 0.9", "Why: confidence 0.3 "
                     "under 0.6", "mood = grumpy", "900 in · 60 out tokens", "reject by lead@example.com (memory "
                     "conflict)", "the old number still works"]:
            expect(steps).to_contain_text(text)
        recalled = page.locator('.ev-memory_recalled li[data-memory="mem_2"]')
        expect(recalled.locator(".untrusted")).to_have_text("from a tool's output")
        expect(page.locator('.ev-memory_recalled li[data-memory="mem_1"] .untrusted')).to_have_count(0)
        expect(page.locator(".ev-memory_learned .facts-learned").first.locator(".untrusted")).to_have_count(1)
        expect(page.locator('.step[data-step="3"] summary')).to_contain_text("learned 1")
        assert page.locator(".steps img").count() == 0 and page.evaluate("typeof window.__xss") == "undefined"
        expect(page.locator('.step[data-step="1"]')).to_have_class(re.compile("has-retry"))
        expect(page.locator('.step[data-step="1"] summary')).to_contain_text("via gemini-2.5-flash-lite")
    finally:
        tab.close()


CONCIERGE = Agent(name="concierge", instructions="Help the user.",
                  memory=MemoryPolicy(conflicts=Conflicts.ask, approvers=("*@example.com",)))
"""The memory page's agent, served by an embedded system of its own (the local stack's fleet keeps no memory): it
remembers, and asks a person when a fact learned contradicts one remembered."""
ALICE = "alice@example.com"


@pytest.fixture
def remembering() -> Iterator[Embedded]:
    """``agex dev --backend memory`` in this process (the API and its deliveries, memory on the in-memory stores),
    its one agent the concierge."""
    from agex.dev.embedded import Embedded, EmbeddedConfig

    with Embedded(EmbeddedConfig(api_port=0, fleet_file=None, agents="tests.e2e.test_console:CONCIERGE")) as system:
        yield system


def _memory(runtime: Runtime, memory_id: str, text: str, key: str, value: str, *, agent: str | None = "concierge",
            trusted: bool = True, run_id: str = "run_earlier", flagged: bool = False) -> MemoryRecord:
    from datetime import timedelta

    from agex.core.memory import MemoryKind, MemoryRecord, MemorySource, MemoryStatus, Scope

    memory = runtime.memory
    assert memory is not None
    dimensions, now = memory.vectors.dimensions, runtime.clock.now()
    axis = sum(map(ord, memory_id)) % dimensions  # a vector of its own: no embedding model needed to store it
    return MemoryRecord(
        id=memory_id, scope=Scope(tenant="dev", agent=agent, user=ALICE), text=text,
        vector=[1.0 if i == axis else 0.0 for i in range(dimensions)], kind=MemoryKind.preference, confidence=0.9,
        source=MemorySource(run_id=run_id, user=ALICE, trusted=trusted), created_at=now, valid_from=now,
        status=MemoryStatus.flagged if flagged else MemoryStatus.active, metadata={"key": key, "value": value},
        expire_at=now + timedelta(days=365), embedding_model=memory.embedder.name, dimensions=dimensions)


def _remembered_run(runtime: Runtime) -> RunHead:
    """A run of Alice's with the concierge that ended after recalling two memories, written as the engine writes
    them; what it teaches comes later (``_learned``)."""
    from datetime import timedelta

    from agex.core.run import Event, EventKind, RunHead, RunStatus

    memory = runtime.memory
    assert memory is not None
    memory.vectors.upsert([
        _memory(runtime, "mem_phone", "Prefers to be called on the phone.", "contact_channel", "phone"),
        _memory(runtime, "mem_city", "Lives in Lyon.", "city", "Lyon", agent=None, trusted=False)])
    now, agent = runtime.clock.now(), runtime.agents.get("concierge")
    head = RunHead(run_id="run_remembers", tenant="dev", agent="concierge", agent_version=agent.version,
                   principal="dev@example.com", input="Please email me from now on.", metadata={"user": ALICE},
                   status=RunStatus.succeeded, step=1, seq=6, result="Noted: we will email you.", created_at=now,
                   updated_at=now, expire_at=now + timedelta(days=7))
    recalled = [{"id": "mem_phone", "text": "Prefers to be called on the phone.", "score": 0.42, "trusted": True,
                 "kind": "preference"},
                {"id": "mem_city", "text": "Lives in Lyon.", "score": 0.31, "trusted": False, "kind": "preference"}]
    events = [(0, EventKind.run_created, {"agent": "concierge", "agent_version": agent.version,
                                          "principal": head.principal, "input": head.input, "metadata": head.metadata}),
              (1, EventKind.step_started, {"attempt": 0, "resumed": False}),
              (1, EventKind.memory_recalled, {"memories": recalled}),
              (1, EventKind.model_response, {"model": agent.model, "message": {"role": "model", "parts": [
                  {"text": head.result}]}, "usage": {"input_tokens": 120, "output_tokens": 8, "cost_usd": 0.00002}}),
              (1, EventKind.step_completed, {"tool_calls": 0, "done": True}),
              (1, EventKind.run_finished, {"status": "succeeded", "result": head.result})]
    runtime.store.create_run(head, [Event(seq=i, step=step, kind=kind, at=now, expire_at=head.expire_at, data=data)
                                    for i, (step, kind, data) in enumerate(events, start=1)])
    return head


def _learned(runtime: Runtime, head: RunHead) -> str:
    """What the run taught, recorded after it ended as the memory task records it: a fact that contradicts the one
    remembered, learned from a tool's output, so a person is asked (the approval); the id of the approval."""
    import functools

    from agex.core.memory import Fact, MemoryKind
    from agex.engine.memory import Plan, record_learned

    memory = runtime.memory
    assert memory is not None
    agent, now = runtime.agents.get("concierge"), runtime.clock.now()
    fact = Fact(key="contact_channel", value="email", text="Prefers to be contacted by email.",
                kind=MemoryKind.preference, confidence=0.9, sources=[1])
    learned = _memory(runtime, "mem_email", fact.text, fact.key, fact.value, trusted=False, run_id=head.run_id,
                      flagged=True)
    (remembered,) = [r for r in memory.view("dev", ALICE, "concierge").records if r.id == "mem_phone"]
    approval = memory.ask_approval(agent, head, Plan(fact, learned, contradicts=remembered), now)
    assert approval is not None
    data = {"facts": [{**fact.model_dump(mode="json"), "trusted": False, "injection_score": 0.02}],
            "left_out": [{**fact.model_dump(mode="json"), "key": "mood", "value": "hurried", "text": "Was in a hurry.",
                          "confidence": 0.3, "trusted": True, "injection_score": 0.0,
                          "reason": "confidence 0.3 under 0.5"}],
            "model": agent.model, "usage": {"input_tokens": 900, "output_tokens": 60, "cost_usd": 0.0001}}
    runtime.store.update_run("dev", head.run_id, functools.partial(
        record_learned, seen_seq=head.seq, data=data, approvals=[approval], now=now, model=agent.model,
        cost_usd=0.0001, tokens=960))
    memory.vectors.upsert([learned])  # held back from recall until a person decides
    return approval.approval_id


def test_a_users_memory_learned_decided_listed_and_erased(remembering: Embedded, browser: Browser) -> None:
    runtime = remembering.runtime
    assert runtime is not None and runtime.memory is not None
    memory = runtime.memory
    head = _remembered_run(runtime)
    tab = Console(browser, remembering.api_url)
    try:
        page = tab.page
        page.goto(f"/console/runs/{head.run_id}")
        tab.sign_in("dev-token", "dev@example.com")

        # the run page: what was recalled, then what is learned after the run's stream ended
        step1 = page.locator('.step[data-step="1"]')
        expect(step1.locator("summary")).to_contain_text("recalled 2")
        expect(step1.locator(".ev-memory_recalled")).to_contain_text("2 memories put in the run's context")
        expect(step1.locator('li[data-memory="mem_city"] .untrusted')).to_have_text("from a tool's output")
        expect(page.locator(".stream-state")).to_have_text("Run ended")
        approval_id = _learned(runtime, head)
        learned = step1.locator(".ev-memory_learned")
        expect(learned).to_contain_text("1 fact kept, 1 left out", timeout=15_000)  # the page looks again after the end
        expect(learned).to_contain_text("contact_channel = email")
        expect(learned).to_contain_text("Why: confidence 0.3 under 0.5")
        if DOC_SHOTS:
            learned.scroll_into_view_if_needed()
            tab.shot("memory-run")

        # the conflict in the inbox: remembered against learned; rejecting needs a comment; no arguments to edit
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Approvals").click()
        card = page.locator(f'li[data-approval="{approval_id}"]')
        expect(card).to_contain_text("Memory conflict")
        expect(card.locator(".remembered")).to_contain_text("Prefers to be called on the phone.")
        expect(card.locator(".learned")).to_contain_text("Learned from a tool's output")
        card.get_by_role("link", name="Review and decide").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("memory:contact_channel")
        expect(page.locator("main .learned")).to_contain_text("Prefers to be contacted by email.")
        assert page.get_by_label("Arguments to run with (JSON)").count() == 0
        page.get_by_role("button", name="Reject").click()
        expect(page.get_by_role("alert")).to_contain_text("A rejection needs a comment")
        page.get_by_label("Comment").fill("Alice asked for calls again last week.")
        if DOC_SHOTS:
            tab.shot("memory-approval")
        page.get_by_role("button", name="Reject").click()
        expect(page.get_by_role("status").filter(has_text="Decided: rejected by dev@example.com")).to_be_visible()

        # the memory page: the signed-in principal's by default, then Alice's, per scope
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Memory").click()
        expect(page.get_by_label("User", exact=True)).to_have_value("dev@example.com")
        expect(page.locator("main")).to_contain_text("Nothing is remembered about dev@example.com.")
        page.get_by_label("User", exact=True).fill(ALICE)
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"/console/memory\?user=alice%40example\.com$"))
        concierge, across = page.locator('[data-scope="concierge"]'), page.locator('[data-scope="*"]')
        expect(concierge.get_by_role("heading")).to_have_text("With concierge")
        expect(concierge.locator('tr[data-memory="mem_phone"]')).to_contain_text("active")
        expect(concierge.locator('tr[data-memory="mem_phone"]')).to_contain_text("current")
        rejected = concierge.locator('tr[data-memory="mem_email"]')
        expect(rejected).to_contain_text("superseded")  # the person kept the remembered fact
        expect(rejected).to_contain_text("by mem_phone")
        expect(rejected.locator(".untrusted")).to_have_text("a tool's output")
        expect(across.get_by_role("heading")).to_have_text("Across agents")
        expect(across.locator('tr[data-memory="mem_city"]')).to_contain_text("city = Lyon")
        if DOC_SHOTS:
            tab.shot("memory")
            page.set_viewport_size(PHONE)
            tab.shot("memory-phone")
            page.set_viewport_size(DESKTOP)

        # erasing asks first; cancelled, nothing is erased
        erase = page.get_by_role("button", name="Erase everything about this user")
        erase.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"Everything remembered about {ALICE} is deleted")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        assert len(memory.view("dev", ALICE, "concierge").records) == 2
        erase.click()
        dialog.get_by_role("button", name="Erase", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="Erased what was remembered")).to_contain_text(
            "3 memories, 0 graph items")
        expect(page.locator("main")).to_contain_text(f"Nothing is remembered about {ALICE}.")
        assert page.locator(".memory-scope").count() == 0
    finally:
        tab.close()


FORGETFUL = Agent(name="forgetful", instructions="Help the user.")
"""An agent that keeps no memory: a deployment of it alone answers ``/v1/memory`` with 404."""


def test_the_memory_page_says_when_the_deployment_keeps_no_memory(browser: Browser) -> None:
    from agex.dev.embedded import Embedded, EmbeddedConfig

    with Embedded(EmbeddedConfig(api_port=0, fleet_file=None, agents="tests.e2e.test_console:FORGETFUL")) as system:
        tab = Console(browser, system.api_url)
        try:
            page = tab.page
            page.goto(f"/console/memory?user={ALICE}")
            tab.sign_in("dev-token", "dev@example.com")
            expect(page.locator("main")).to_contain_text("This deployment keeps no long-term memory")
            expect(page.get_by_role("button", name="Erase everything about this user")).to_be_hidden()
        finally:
            tab.close()
