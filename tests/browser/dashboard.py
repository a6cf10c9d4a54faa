"""The dashboard in a real headless Chromium (Playwright driving Debian's
chromium). Run by tests/tests/dashboard.rs through scripts/check-ui with:
BASE, ADMIN_KEY, TENANT_KEY, FAILED_ID (a failed job of the tenant, in the
paused queue `mail`), XSS_ID (a job whose payload holds a <script>), OTHER_ID
(another tenant's job), WORKFLOW_ID (a workflow a -> b -> c, a -> c, held
in `mail`). Exits non-zero with a message on the first failure.
"""
import json
import os
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

BASE = os.environ["BASE"]
ADMIN = os.environ["ADMIN_KEY"]
TENANT = os.environ["TENANT_KEY"]
FAILED = os.environ["FAILED_ID"]
XSS = os.environ["XSS_ID"]
OTHER = os.environ["OTHER_ID"]
WORKFLOW = os.environ["WORKFLOW_ID"]


def api(path, key=ADMIN):
    req = urllib.request.Request(BASE + path, headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def check(cond, message):
    if not cond:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


def sign_in(page, key):
    page.goto(BASE + "/ui")
    page.fill("#key", key)
    page.click("#signin button[type=submit]")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                args=["--no-sandbox"])
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # A wrong key is refused and nothing is shown.
    sign_in(page, "weir_wrongwrongwrongwrongwrongwrongwrongwrong")
    page.wait_for_selector("#signin-error:has-text('refused')", timeout=5000)
    check(page.is_hidden("#nav"), "no navigation for a refused key")

    # Admin: the queue list with the API's counts.
    sign_in(page, ADMIN)
    page.wait_for_selector("#who:has-text('admin key')", timeout=5000)
    page.wait_for_selector("tr[data-id='mail']", timeout=5000)
    queues = {q["name"]: q for q in api("/v1/queues")["data"]}
    cells = page.locator("tr[data-id='mail'] td").all_inner_texts()
    states = ["queued", "running", "scheduled", "retrying", "succeeded", "failed", "cancelled"]
    for i, s in enumerate(states):
        want = str(queues["mail"]["counts"].get(s, 0))
        check(cells[1 + i] == want, f"mail {s}: page shows {cells[1 + i]}, API says {want}")
    check("paused" in cells[-2], f"mail shows paused: {cells}")
    check(cells[9] != "-", f"mail's next job has an age: {cells}")

    # The failed job: open it, retry it, and the API sees it queued.
    page.click("nav button[data-view='failed']")
    page.wait_for_selector(f"tr[data-id='{FAILED}']", timeout=5000)
    page.click(f"tr[data-id='{FAILED}']")
    page.wait_for_selector(f"#job-id:has-text('{FAILED}')", timeout=5000)
    page.click("#retry")
    deadline = time.time() + 5
    while api(f"/v1/jobs/{FAILED}")["state"] != "queued":
        check(time.time() < deadline, "the retried job is queued")
        time.sleep(0.1)

    # A payload with <script> is text: shown, never run, no markup made.
    page.evaluate(f"() => {{ state.job = '{XSS}'; go('job'); }}")
    page.wait_for_selector(f"#job-id:has-text('{XSS}')", timeout=5000)
    shown = page.inner_text("#payload")
    check("<script>window.pwned = 1</script>" in shown, f"the payload shows as text: {shown}")
    check(page.evaluate("() => window.pwned === undefined"), "the payload's script did not run")
    check(page.locator("#payload b").count() == 0, "no markup from the payload")

    # The workflow: its DAG in columns by depth, each step with its state;
    # cancelling it cancels every step.
    page.click("nav button[data-view='workflows']")
    page.wait_for_selector(f"tr[data-id='{WORKFLOW}']", timeout=5000)
    page.click(f"tr[data-id='{WORKFLOW}']")
    page.wait_for_selector(f"#workflow-id:has-text('{WORKFLOW}')", timeout=5000)
    levels = page.locator("#dag .level").all_inner_texts()
    check(len(levels) == 3, f"three levels: {levels}")
    check(levels[0].startswith("a") and "queued" in levels[0], f"a is queued first: {levels}")
    check(levels[2].startswith("c") and "waiting" in levels[2], f"c waits last: {levels}")
    page.click("text=Cancel")
    deadline = time.time() + 5
    while api(f"/v1/workflows/{WORKFLOW}")["state"] != "cancelled":
        check(time.time() < deadline, "the cancelled workflow ends cancelled")
        time.sleep(0.1)

    # The page's headers: a strict CSP, no framing.
    response = page.request.get(BASE + "/ui")
    csp = response.headers.get("content-security-policy", "")
    check("script-src 'self'" in csp and "frame-ancestors 'none'" in csp, f"CSP: {csp}")

    # A tenant key: read-only, its own jobs only.
    page.click("#signout")
    sign_in(page, TENANT)
    page.wait_for_selector("#who:has-text('read only')", timeout=5000)
    check(page.is_hidden("nav button[data-view='workers']"), "no admin views for a tenant")
    page.click("nav button[data-view='jobs']")
    page.wait_for_selector(f"tr[data-id='{XSS}']", timeout=5000)
    check(page.locator(f"tr[data-id='{OTHER}']").count() == 0, "no other tenant's job")
    page.click("nav button[data-view='queues']")
    page.wait_for_selector("tr[data-id='mail']", timeout=5000)
    check(page.locator("tr[data-id='mail'] button").count() == 0, "no pause button for a tenant")
    page.evaluate(f"() => {{ state.job = '{FAILED}'; go('job'); }}")
    page.wait_for_selector(f"#job-id:has-text('{FAILED}')", timeout=5000)
    check(page.locator("#retry, #cancel").count() == 0, "no actions for a tenant")

    check(not [e for e in errors if "Content Security Policy" in e], f"CSP violations: {errors}")
    browser.close()
print("dashboard checks passed")
