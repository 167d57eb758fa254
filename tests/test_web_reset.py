"""The page's "Reset to the config" (issue 23 item 2): a real player behind `playbach web`, changed
live, put back to its config's values by the button in headless Chromium (POST /api/reset, the
control op `reset`); without the token the reset is refused and nothing changes."""
from __future__ import annotations

import pytest
from fixtures_player import wait_until
from fixtures_web import BPM

pytestmark = pytest.mark.midi


def live(web_rig) -> dict:
    return web_rig.api("GET", "/api/status")[1]["live"]


def test_reset_without_the_token_is_refused(web_rig):
    assert web_rig.api("POST", "/api/settings", {"bpm": 45})[0] == 200
    status, reply, _ = web_rig.api("POST", "/api/reset", {}, token=None)
    assert status == 401
    assert live(web_rig)["bpm"] == 45
    status, reply, _ = web_rig.api("POST", "/api/reset", {})
    assert status == 200 and reply["live"]["bpm"] == BPM, reply


def test_the_reset_button_puts_the_config_back(web_rig, browser):
    from selenium.webdriver.common.by import By

    assert web_rig.api("POST", "/api/settings", {"bpm": 40, "key": "D minor", "density": 3})[0] == 200
    browser.get(web_rig.url + "/")
    wait_until(lambda: browser.find_element(By.ID, "token").is_displayed(), what="the token form")
    browser.find_element(By.ID, "token").send_keys(web_rig.token)
    browser.find_element(By.ID, "login-go").click()
    wait_until(lambda: browser.find_elements(By.ID, "set-bpm"), 20, "the tempo control")
    wait_until(lambda: browser.find_element(By.ID, "bpm").text == "40 BPM", 5, "the page to show 40 BPM")
    browser.find_element(By.ID, "reset").click()
    wait_until(lambda: live(web_rig)["bpm"] == BPM, 10, "the config's tempo")
    now = live(web_rig)
    assert (now["key"], now["density"]) == ("", 0.0), now
    wait_until(lambda: browser.find_element(By.ID, "set-bpm").get_attribute("value") == f"{BPM:g}", 5,
               "the tempo control to show the config's tempo")
    wait_until(lambda: browser.find_element(By.ID, "set-key").get_attribute("value") == "", 5,
               "the key menu back on the model's own")
