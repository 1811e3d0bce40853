"""The trigger forms work in a real browser: Debian's chromium, driven by Playwright, signs in to the
api-server, opens each DAG's trigger form, submits it with its defaults and with one field changed, and
REST shows the run created with exactly that conf.

Only the api-server and the dag-processor run (no scheduler): the runs stay queued and the DAGs stay
paused ("Unpause on trigger" is unticked), so nothing trains. Playwright never downloads a browser here:
it is pointed at the system chromium (`NCBI_RETRAIN_CHROMIUM`, default /usr/bin/chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator

import pytest
from stack_helpers import AirflowEnv, Rest, airflow_env, core_components, running

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
RETRAIN_DEFAULTS = {
    "data_revision": None,
    "models": "both",
    "profile": "cpu",
    "epochs": None,
    "learning_rate": None,
    "encoder": None,
    "max_seq_length": None,
    "promote": "auto",
    "force": False,
}
PROMOTE_DEFAULTS = {"model": "classifier", "action": "promote", "version": "previous"}


def _chromium() -> str:
    exe = os.environ.get("NCBI_RETRAIN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(exe, os.X_OK):
        # CI installs it (.ci/run); elsewhere a missing browser is a skip with the reason.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"chromium not found at {exe} (apt-get install chromium)"
        )
    return exe


@pytest.fixture(scope="module")
def ui_stack(postgres, tmp_path_factory) -> Iterator[tuple[AirflowEnv, Rest]]:
    """api-server + dag-processor on a fresh database, both DAGs parsed."""
    base = tmp_path_factory.mktemp("ui-stack")
    stack = airflow_env(postgres, base)
    with running(stack, core_components(stack, only=("api-server", "dag-processor")), base):
        rest = Rest(stack.url, stack.password)
        for dag_id in ("ncbi_retrain", "ncbi_promote"):
            rest.wait_dag(dag_id)
        yield stack, rest


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev group's playwright")
    exe = _chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, ui_stack, tmp_path):
    """A signed-in page (the simple auth manager's login form); a screenshot is kept on failure."""
    stack, _ = ui_stack
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{stack.url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login)"))
    yield page
    page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
    context.close()


def _open_form(page, url: str, dag_id: str):
    """The DAG page's Trigger button -> the trigger dialog, with "Unpause on trigger" unticked."""
    page.goto(f"{url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    unpause = dialog.get_by_label(f"Unpause {dag_id} on trigger")
    if unpause.is_checked():
        dialog.get_by_text(f"Unpause {dag_id} on trigger").click()
    assert not unpause.is_checked()
    return dialog


def _field(dialog, section: str, name: str):
    """The input of Param `name`, its section expanded first (the form shows one section at a time)."""
    field = dialog.locator(f"[name=element_{name}]")
    if not field.is_visible():
        dialog.get_by_role("button", name=section, exact=True).click()
    return field


def _submit(page, dialog, rest: Rest, dag_id: str) -> dict:
    """Click Trigger (it must be enabled), follow the UI to the new run, return that run from REST."""
    from playwright.sync_api import expect

    button = dialog.get_by_role("button", name="Trigger", exact=True)
    expect(button).to_be_enabled()
    button.click()
    page.wait_for_url(re.compile(rf"/dags/{dag_id}/runs/[^/]+$"))
    run_id = urllib.parse.unquote(page.url.rsplit("/", 1)[1])
    status, run = rest("GET", f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
    assert status == 200, run
    return run


def _runs(rest: Rest, dag_id: str) -> list[dict]:
    status, body = rest("GET", f"dags/{dag_id}/dagRuns")
    assert status == 200, body
    return body["dag_runs"]


def test_retrain_form_submits_its_defaults_and_a_changed_field(page, ui_stack):
    stack, rest = ui_stack
    dialog = _open_form(page, stack.url, "ncbi_retrain")
    assert _field(dialog, "Data", "data_revision").input_value() == ""  # optional, shown empty
    run = _submit(page, dialog, rest, "ncbi_retrain")
    assert run["conf"] == RETRAIN_DEFAULTS
    assert run["run_type"] == "manual"

    dialog = _open_form(page, stack.url, "ncbi_retrain")
    _field(dialog, "Training", "epochs").fill("3")
    run = _submit(page, dialog, rest, "ncbi_retrain")
    assert run["conf"] == RETRAIN_DEFAULTS | {"epochs": 3}

    status, dag = rest("GET", "dags/ncbi_retrain")
    assert status == 200 and dag["is_paused"] is True  # nothing was scheduled by these submissions


def test_promote_form_requires_a_reason(page, ui_stack):
    from playwright.sync_api import expect

    stack, rest = ui_stack
    dialog = _open_form(page, stack.url, "ncbi_promote")
    reason = _field(dialog, "Champion", "reason")
    trigger = dialog.get_by_role("button", name="Trigger", exact=True)
    # Without a reason the form says so and will not submit.
    expect(dialog.get_by_text("This field is required")).to_be_visible()
    expect(trigger).to_be_disabled()
    # Too short: the form submits, the API refuses it (400, shown in the dialog), and no run exists.
    reason.fill("no")
    trigger.click()
    expect(dialog.get_by_text("Invalid input for param reason: 'no' is too short")).to_be_visible()
    assert "/runs/" not in page.url and _runs(rest, "ncbi_promote") == []

    reason.fill("bad data in v3")
    run = _submit(page, dialog, rest, "ncbi_promote")
    assert run["conf"] == PROMOTE_DEFAULTS | {"reason": "bad data in v3"}

    dialog = _open_form(page, stack.url, "ncbi_promote")
    _field(dialog, "Champion", "reason").fill("same for the tagger")
    dialog.locator("#element_model").click()  # the Model drop-down (an enum of tasks.vocab.Model)
    page.get_by_role("option", name="ner", exact=True).click()
    run = _submit(page, dialog, rest, "ncbi_promote")
    assert run["conf"] == PROMOTE_DEFAULTS | {"model": "ner", "reason": "same for the tagger"}
    assert len(_runs(rest, "ncbi_promote")) == 2
