"""The web dashboard in real headless Chromium (Debian's ``chromium``, driven
by Playwright's Python client), against ``rrjobs serve --dashboard``.

Screenshots go to each test's tmp_path, and also to ``RRJOBS_SCREENSHOT_DIR``
when it is set (``RRJOBS_SCREENSHOT_DIR=docs/images`` refreshes the pictures
of docs/operations.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from integration.operator_helpers import (
    Served,
    program,
    screenshot_dirs,
    served,
    unavailable,
    wait_until,
)

try:
    from playwright.sync_api import expect
except ImportError:  # reported by the browser fixture: skipped, or failed in CI
    expect = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "dashboard-test-token"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = program("chromium", CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"playwright is not importable ({exc}); pip install -e '.[integration]'")
        raise
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path, token=TOKEN) as srv:
        yield srv


@pytest.fixture
def page(browser: Browser, server: Served) -> Iterator[Page]:
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], errors


def shoot(page: Page, tmp_path: Path, name: str, *, docs: bool = True, **kw: Any) -> None:
    """Save a screenshot in tmp_path and, with ``docs``, in ``RRJOBS_SCREENSHOT_DIR``."""
    for d in screenshot_dirs(tmp_path) if docs else [tmp_path]:
        page.screenshot(path=str(d / name), **kw)
    assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def log_in(page: Page, server: Served, token: str = TOKEN) -> None:
    page.goto(server.dashboard)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Connect").click()


def cell(page: Page, pipeline: str, label: str) -> str:
    return page.locator(f'#pipelines tr[data-pipeline="{pipeline}"] [data-label="{label}"]'
                        ).inner_text().strip()


def stat(server: Served) -> dict[str, dict[str, Any]]:
    result = server.rrjobs("stat", "--json")
    assert result.returncode == 0, result.stderr
    return {s["pipeline"]: s for s in json.loads(result.stdout)["stats"]}


def dlq_ids(server: Served, pipeline: str) -> list[str]:
    """The job ids of ``rrjobs dlq list PIPELINE --json``, oldest first."""
    result = server.rrjobs("dlq", "list", pipeline, "--json")
    assert result.returncode == 0, result.stderr
    return [d["id"] for d in json.loads(result.stdout)]


def letter_ids(page: Page) -> list[str]:
    return [row.get_attribute("data-id") or "" for row in
            page.locator("#dead-letters tbody tr").all()]


def open_dead_letters(page: Page, server: Served) -> Locator:
    """Log in, then into the Dead letters tab from the keyboard (the Overview
    tab, then ArrowRight); returns its Pipeline list."""
    log_in(page, server)
    page.locator("#pipelines tbody tr").first.wait_for()
    overview = page.get_by_role("tab", name="Overview")
    overview.focus()
    page.keyboard.press("ArrowRight")
    tab = page.get_by_role("tab", name="Dead letters")
    expect(tab).to_have_attribute("aria-selected", "true")
    assert tab.evaluate("t => t === document.activeElement")
    assert page.evaluate("location.hash") == "#dead-letters"
    expect(page.get_by_role("tabpanel", name="Dead letters")).to_be_visible()
    assert not page.locator("#view-overview").is_visible()
    return page.get_by_label("Pipeline", exact=True)


def test_counts_and_rates_rise_as_jobs_are_pushed(page: Page, server: Served,
                                                  tmp_path: Path) -> None:
    log_in(page, server)
    page.wait_for_selector('#pipelines tr[data-pipeline="emails"]')
    assert page.locator("#connection").inner_text() == "live"
    assert cell(page, "emails", "OK") == "0"
    assert page.locator("#summary").get_attribute("aria-live") == "polite"

    for i in range(16):
        server.push("emails", "work", "0.01", count=5 + 3 * (i % 5))
        server.push("reports", "work", "0.2", count=1)
        page.wait_for_timeout(250)
    wait_until(lambda: cell(page, "emails", "OK") == "170", what="170 ok on the page")
    assert cell(page, "reports", "OK") != ""
    assert "4 pipelines" in page.locator("#summary").inner_text()
    rates = page.locator('#pipelines tr[data-pipeline="emails"] svg.chart')
    label = rates.get_attribute("aria-label") or ""
    assert "pushed/s" in label and "peak" in label
    points = rates.locator("polyline.line-push").get_attribute("points") or ""
    assert len(points.split()) >= 3
    assert any(float(p.split(",")[1]) < 30 for p in points.split())  # a rate above zero

    server.push("reports", "work", "3", count=2)
    expect(page.locator("#longest")).to_have_text(re.compile(
        r"^Longest-running: work \(\S+\) on reports, \d+\.\d s\.$"))
    expect(page.locator("#workers-summary")).to_have_text("2 busy, 2 idle of 4 workers.")
    expect(page.locator("#running tbody tr")).to_have_count(2)
    server.push("emails", "boom", "smtp.example:25")
    page.wait_for_selector("#failures li")
    shoot(page, tmp_path, "dashboard.png", full_page=True)

    phone = page.context.browser.new_page(viewport=PHONE)  # type: ignore[union-attr,arg-type]
    try:
        log_in(phone, server)
        phone.wait_for_selector('#pipelines tr[data-pipeline="emails"]')
        box = phone.locator('#pipelines tr[data-pipeline="emails"]').bounding_box()
        assert box is not None and box["width"] <= PHONE["width"]  # a card, no sideways scroll
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shoot(phone, tmp_path, "dashboard-phone.png")
    finally:
        phone.close()
    page.wait_for_timeout(500)
    assert "Error handling request" not in server.log.read_text(errors="replace")


def test_pause_resume_and_destroy(page: Page, server: Served, tmp_path: Path) -> None:
    log_in(page, server)
    row = page.locator('#pipelines tr[data-pipeline="reports"]')
    row.wait_for()
    pause = page.get_by_role("button", name="Pause reports")
    expect(pause).to_be_enabled()
    for _ in range(60):  # from the keyboard: Tab to the button, its focus shows, Enter presses
        page.keyboard.press("Tab")
        if pause.evaluate("b => b === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the Pause reports button")
    outline = pause.evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    wait_until(lambda: cell(page, "reports", "State") == "paused", what="paused on the page")
    assert page.locator("#notice").inner_text() == "Pipeline reports paused."
    assert stat(server)["reports"]["ready"] is False
    assert page.get_by_role("button", name="Pause reports").is_disabled()

    page.get_by_role("button", name="Resume reports").click()
    wait_until(lambda: cell(page, "reports", "State") == "consuming", what="consuming again")
    assert stat(server)["reports"]["ready"] is True

    page.get_by_role("button", name="Destroy reports").click()
    dialog = page.get_by_role("dialog", name="Destroy pipeline reports?")
    dialog.wait_for()
    assert "cannot be undone" in dialog.inner_text()
    shoot(page, tmp_path, "dashboard-destroy.png")
    dialog.get_by_role("button", name="Cancel").click()
    assert not dialog.is_visible()
    assert "reports" in stat(server)

    page.get_by_role("button", name="Destroy reports").click()
    page.keyboard.press("Escape")  # the dialog closes from the keyboard too
    assert not dialog.is_visible()
    assert "reports" in stat(server)

    page.get_by_role("button", name="Destroy reports").click()
    dialog.get_by_role("button", name="Destroy").click()
    row.wait_for(state="detached")
    assert "reports" not in stat(server)
    assert server.rrjobs("list").stdout.split() == ["emails", "failed", "invoices"]


INVOICES = [{"invoice": 1001, "amount": "129.00", "customer": {"id": "c-17", "country": "NL"}},
            {"invoice": 1002, "amount": "15.50", "customer": {"id": "c-4", "country": "FR"}},
            {"invoice": 1003, "amount": "7.25", "customer": {"id": "c-9", "country": "DE"}}]


def test_dead_letters_browse_peek_replay_and_purge(page: Page, server: Served,
                                                   tmp_path: Path) -> None:
    select = open_dead_letters(page, server)
    expect(select).to_have_value("invoices")  # the first pipeline whose letters can be read
    expect(page.locator("#dl-summary")).to_have_text("No dead letters in invoices.")
    assert not page.locator("#dead-letters").is_visible()
    assert page.get_by_role("button", name="Purge…").is_disabled()

    for n, invoice in enumerate(INVOICES, 1001):  # the gateway is down: each is given up
        server.push("invoices", "charge", json.dumps(invoice), ids=[f"invoice-{n}"])
    # the list follows the pipeline's dead-lettered count by itself
    expect(page.locator("#dl-summary")).to_have_text(
        "3 dead letters in invoices, oldest first.")
    assert letter_ids(page) == ["invoice-1001", "invoice-1002", "invoice-1003"]
    assert dlq_ids(server, "invoices") == letter_ids(page)
    first = page.locator('#dead-letters tr[data-id="invoice-1001"]')
    assert first.locator('[data-label="Error"]').inner_text() == \
        "ConnectionError: payment gateway unreachable"
    assert first.locator('[data-label="Attempts"]').inner_text() == "1"
    assert first.locator('[data-label="Name"]').inner_text() == "charge"

    page.get_by_role("button", name="Peek at invoice-1001").click()
    panel = page.get_by_role("region", name="Dead letter invoice-1001")
    expect(panel).to_be_visible()
    assert panel.evaluate("p => p === document.activeElement")  # the focus follows
    size = len(json.dumps(INVOICES[0]).encode())
    assert page.locator("#peek-payload-title").inner_text() == f"Payload (JSON, {size} B)"
    assert page.locator("#peek-payload").inner_text() == json.dumps(INVOICES[0], indent=2)
    fields = page.locator("#peek-fields").inner_text()
    assert "Replays into\ninvoices" in fields and "Attempts\n1" in fields
    shoot(page, tmp_path, "dashboard-dead-letters.png", full_page=True)
    page.keyboard.press("Escape")  # closes it; the focus goes back to its Peek button
    expect(panel).to_be_hidden()
    peek = page.get_by_role("button", name="Peek at invoice-1001")
    assert peek.evaluate("b => b === document.activeElement")
    page.keyboard.press("Enter")
    expect(panel).to_be_visible()

    phone = page.context.browser.new_page(viewport=PHONE)  # type: ignore[union-attr,arg-type]
    try:
        phone.goto(server.dashboard + "#dead-letters")
        phone.get_by_label("Access token").fill(TOKEN)
        phone.get_by_role("button", name="Connect").click()
        phone.locator('#dead-letters tr[data-id="invoice-1003"]').wait_for()
        phone.get_by_role("button", name="Peek at invoice-1003").click()
        phone.locator("#peek").wait_for()
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        phone.locator("#dead-letters tbody tr").last.evaluate("r => r.scrollIntoView()")
        shoot(phone, tmp_path, "dashboard-dead-letters-phone.png")
    finally:
        phone.close()

    (server.workdir / "gateway-up").touch()  # the gateway is back: a replay goes through
    panel.get_by_role("button", name="Replay").click()
    expect(page.locator("#notice")).to_have_text(
        "Replayed 1 dead letter of invoices: invoice-1001.")
    expect(page.locator("#dl-summary")).to_have_text("2 dead letters in invoices, oldest first.")
    assert not panel.is_visible()
    wait_until(lambda: (server.workdir / "charged.txt").exists(), what="the replay handled")
    assert (server.workdir / "charged.txt").read_text() == \
        f"invoice-1001 {json.dumps(INVOICES[0])}\n"
    wait_until(lambda: stat(server)["invoices"]["counters"]["ok"] == 1,
               what="rrjobs stat counts the replayed job ok")
    assert dlq_ids(server, "invoices") == ["invoice-1002", "invoice-1003"]
    page.get_by_role("tab", name="Overview").click()
    wait_until(lambda: cell(page, "invoices", "OK") == "1", what="1 ok on the page")
    page.get_by_role("tab", name="Dead letters").click()

    page.get_by_role("button", name="Replay invoice-1002").click()
    expect(page.locator("#dl-summary")).to_have_text("1 dead letter in invoices, oldest first.")
    wait_until(lambda: stat(server)["invoices"]["counters"]["ok"] == 2, what="2 ok")
    assert "invoice-1002" in (server.workdir / "charged.txt").read_text()

    purge = page.get_by_role("button", name="Purge…")
    purge.click()
    dialog = page.get_by_role("dialog", name="Purge the dead letters of invoices?")
    dialog.wait_for()
    assert "(1 listed) is deleted for good" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    assert not dialog.is_visible()
    assert purge.evaluate("b => b === document.activeElement")
    assert dlq_ids(server, "invoices") == ["invoice-1003"]
    purge.click()
    dialog.get_by_role("button", name="Purge").click()
    expect(page.locator("#notice")).to_have_text("Purged 1 dead letter of invoices.")
    expect(page.locator("#dl-summary")).to_have_text("No dead letters in invoices.")
    assert dlq_ids(server, "invoices") == []
    assert "invoice-1003" not in (server.workdir / "charged.txt").read_text()


def test_a_driver_without_readable_dead_letters_says_so(page: Page, server: Served,
                                                        tmp_path: Path) -> None:
    select = open_dead_letters(page, server)
    assert select.locator("option").all_inner_texts() == [
        "emails (not readable)", "failed (not readable)", "invoices", "reports (not readable)"]
    select.select_option("reports")
    note = page.locator("#dl-unreadable")
    expect(note).to_have_text(re.compile(
        r"^pipeline 'reports': the 'memory' driver cannot read its dead letters back "
        r"\(capability dead_letter_read is false"))
    expect(page.locator("#dl-summary")).to_have_text(
        "The dead letters of reports cannot be browsed here.")
    assert not page.locator("#dead-letters").is_visible()
    assert page.get_by_role("button", name="Replay all").is_disabled()
    assert page.get_by_role("button", name="Purge…").is_disabled()
    assert page.locator("#problem").inner_text() == ""  # a capability, not a failure
    shoot(page, tmp_path, "dashboard-dead-letters-unreadable.png")

    select.select_option("emails")  # moved to another pipeline: the message says where
    expect(note).to_have_text(re.compile(r"its failed jobs go to pipeline 'failed'"))
    select.select_option("invoices")
    expect(page.locator("#dl-summary")).to_have_text("No dead letters in invoices.")
    assert not note.is_visible()


def test_a_missing_or_wrong_token_is_refused(page: Page, server: Served,
                                             tmp_path: Path) -> None:
    page.goto(server.dashboard)
    form = page.locator("#token-form")
    form.wait_for()
    assert page.locator("#token-title").inner_text() == "Token required"
    assert page.locator("#pipelines tbody tr").count() == 0
    anonymous = page.request.get(server.dashboard + "api/snapshot")
    assert anonymous.status == 401

    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#token-title")).to_have_text("Token refused")
    assert page.locator("#connection").inner_text() == "token refused"
    assert page.locator("#pipelines tbody tr").count() == 0
    assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept
    shoot(page, tmp_path, "dashboard-token.png")
    wrong = page.request.get(server.dashboard + "api/snapshot",
                             headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status == 401
    refused = page.request.post(server.dashboard + "api/pipelines/emails/pause",
                                headers={"Content-Type": "application/json"}, data="{}")
    assert refused.status == 401
    for path in ("invoices/dead-letters/replay", "invoices/dead-letters/purge"):
        dead = page.request.post(f"{server.dashboard}api/pipelines/{path}",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer not-the-token"},
                                 data='{"all": true}' if path.endswith("replay") else "{}")
        assert dead.status == 401
    assert page.request.get(server.dashboard + "api/pipelines/invoices/dead-letters"
                            ).status == 401
    assert stat(server)["emails"]["ready"] is True

    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Connect").click()
    page.locator('#pipelines tr[data-pipeline="emails"]').wait_for()
    assert not form.is_visible()
    assert TOKEN not in page.url
    assert TOKEN not in server.log.read_text(errors="replace")


def test_a_failure_shows_in_recent_failures(page: Page, server: Served,
                                            tmp_path: Path) -> None:
    log_in(page, server)
    page.locator('#pipelines tr[data-pipeline="emails"]').wait_for()
    assert page.locator("#failures-empty").is_visible()
    server.push("emails", "boom", "smtp.example:25")
    expect(page.locator("#failures li")).to_have_count(3)
    items = page.locator("#failures li")
    newest = items.nth(0)
    assert "boom on failed" in newest.inner_text()
    oldest = items.nth(2)
    text = oldest.inner_text()
    assert "boom on emails" in text and "attempt 1" in text and "retried" in text
    assert oldest.locator(".failure-error").inner_text() == \
        "ValueError: cannot reach smtp.example:25"
    assert "dead-lettered to failed" in items.nth(1).inner_text()
    traceback = oldest.locator("pre")
    assert not traceback.is_visible()
    oldest.locator("summary").click()
    assert traceback.is_visible()
    assert 'in boom' in traceback.inner_text()
    assert not page.locator("#failures-empty").is_visible()
    wait_until(lambda: cell(page, "emails", "Dead-lettered") == "1", what="dead-lettered 1")
    # not for the docs: a traceback shows this machine's paths
    shoot(page, tmp_path, "dashboard-failures.png", docs=False, full_page=True)
