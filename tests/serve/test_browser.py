"""The explorer in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): search by
upload and by item, paging, the postprocessor switch, the worst-query page; screenshots taken, the DOM checked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omlcore.visualization import FRAME_COLOURS

from .conftest import Served

CELLS = "#ranking figure.cell"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium; skipped, naming what is missing, without Selenium, chromium or chromedriver."""
    pytest.importorskip("selenium", reason="needs selenium (pip install selenium; the tox env py has it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        found = {"chromium": chromium, "chromedriver": driver_path}
        missing = " and ".join(name for name, path in found.items() if path is None)
        pytest.skip(f"needs {missing} (apt-get install -y chromium chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def screenshot(browser: Any, path: Path) -> None:
    browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def cells(browser: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, CELLS)


def images_loaded(browser: Any) -> bool:
    """Every thumbnail on the page was fetched and decoded (natural width above 0)."""
    return bool(browser.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))


def frame_colour(browser: Any, figure: Any) -> tuple[int, int, int]:
    from selenium.webdriver.common.by import By

    colour = figure.find_element(By.TAG_NAME, "img").value_of_css_property("border-top-color")
    red, green, blue = (int(float(part)) for part in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
    return red, green, blue


def wait_for(browser: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(condition)


def test_search_by_upload(served: Served, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url + "/")
    upload = served.csv.parent / "3_2.png"
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(upload))
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    wait_for(browser, lambda b: "/search?upload=" in b.current_url)
    found = cells(browser)
    assert len(found) == 20
    first = found[0]
    assert first.get_attribute("data-item") == "20"  # the indexed copy of the uploaded image (label 3, image 2)
    assert first.find_element(By.TAG_NAME, "figcaption").text.startswith("#1 ")
    assert browser.find_element(By.CSS_SELECTOR, "#query img").get_attribute("src").startswith(served.url + "/thumbs/")
    assert images_loaded(browser)
    screenshot(browser, tmp_path / "upload.png")


def test_search_by_item_with_paging(served: Served, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url + "/items")
    browser.find_element(By.CSS_SELECTOR, 'figure[data-item="7"] a').click()
    wait_for(browser, lambda b: "/search?item=7" in b.current_url)
    found = cells(browser)
    assert len(found) == 20
    kinds = {figure.get_attribute("data-kind") for figure in found}
    assert kinds <= {"correct", "wrong"} and "correct" in kinds
    for figure in found[:5]:  # the frames are the HTML grids' colours
        assert frame_colour(browser, figure) == FRAME_COLOURS[figure.get_attribute("data-kind")]
    assert images_loaded(browser)
    screenshot(browser, tmp_path / "item.png")
    browser.find_element(By.ID, "next").click()
    wait_for(browser, lambda b: "page=2" in b.current_url)
    captions = [figure.find_element(By.TAG_NAME, "figcaption").text for figure in cells(browser)]
    assert len(captions) == 15 and captions[0].startswith("#21 ")


def test_postprocessor_switch(served: Served, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(served.url + "/search?item=4")
    plain = [figure.get_attribute("data-item") for figure in cells(browser)]
    Select(browser.find_element(By.ID, "postprocessor")).select_by_value("k_reciprocal")  # the page's script submits
    wait_for(browser, lambda b: "postprocessor=k_reciprocal" in b.current_url)
    moved = browser.find_elements(By.CSS_SELECTOR, f"{CELLS} .moved")
    assert len(moved) == 20 and all(m.text == "new" or m.text.startswith("was #") for m in moved)
    for figure, mark in zip(cells(browser), moved, strict=True):  # "was #r": its rank in the plain ranking
        before = mark.get_attribute("data-before")
        if before:
            assert plain[int(before) - 1] == figure.get_attribute("data-item")
    selected = Select(browser.find_element(By.ID, "postprocessor")).first_selected_option
    assert selected.get_attribute("value") == "k_reciprocal"
    screenshot(browser, tmp_path / "switch.png")


def test_worst_queries_and_a_full_ranking(served: Served, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url + "/run")
    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tr[data-metric]")
    assert {row.get_attribute("data-metric") for row in rows} >= {"OVERALL/cmc/1", "OVERALL/map/3"}
    cmc = browser.find_element(By.CSS_SELECTOR, '#metrics tr[data-metric="OVERALL/cmc/1"]')
    reported, recomputed = (cell.text for cell in cmc.find_elements(By.CSS_SELECTOR, "td.num"))
    assert reported == recomputed
    cmc.find_element(By.LINK_TEXT, "worst").click()
    wait_for(browser, lambda b: "/run/worst" in b.current_url)
    worst = browser.find_elements(By.CSS_SELECTOR, "#worst .row")
    assert 1 <= len(worst) <= 8
    values = [
        float(row.find_element(By.CSS_SELECTOR, "figure.query figcaption").text.rsplit(": ", 1)[1]) for row in worst
    ]
    assert values == sorted(values)
    assert images_loaded(browser)
    screenshot(browser, tmp_path / "worst.png")
    query = worst[0].get_attribute("data-item")
    worst[0].find_element(By.CSS_SELECTOR, "figure.query a").click()
    wait_for(browser, lambda b: f"/run/queries/{query}" in b.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, "#query-metrics tr")
    assert len(cells(browser)) == 20


def test_paths_are_escaped_in_the_page(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url + "/search?item=0")
    assert browser.find_elements(By.ID, "injected") == []  # the file name's markup stayed text
    assert 'q"><b id="injected">x.png' in browser.find_element(By.ID, "query").text
