"""The results page in a real headless browser (Chromium from Debian's packages, driven by
Selenium): it loads from disk with no console error, every image loads, sorting a column
reorders its rows, and the task / scale filter hides the rest."""
import shutil
from pathlib import Path

import pytest

from benchmark.render import render_grid
from benchmark.render.page import markdown_to_html
from tests.helpers import marked_figures_store

webdriver = pytest.importorskip("selenium.webdriver", reason="the page test needs Selenium: pip install -e \".[page-tests]\"")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "results-page.png"


def test_markdown_tables_links_and_marks_become_html():
    html = markdown_to_html("# Table 8: Token shift\n\nSee [`claims.md`](claims.md#table-8), **bold** <u>two</u> "
                            "`code` <script>x</script>.\n\n| a | b |\n|---|---:|\n| k=1 ✗ | 1.5 |\n", "token_shift")
    assert '<h2 id="token_shift">Table 8: Token shift</h2>' in html
    assert '<a href="#claims-table-8"><code>claims.md</code></a>' in html
    assert "<strong>bold</strong> <u>two</u> <code>code</code> &lt;script&gt;x&lt;/script&gt;." in html
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>k=1 ✗</td><td>1.5</td></tr>" in html


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="no Chromium and chromedriver here: apt-get install chromium chromium-driver")
def test_the_page_loads_from_disk_its_images_load_and_a_column_sorts(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    written = render_grid(marked_figures_store(tmp_path / "runs"), tmp_path / "tables")
    page = next(p for p in written if p.name == "index.html")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        browser.get(page.as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        images = browser.execute_script("return Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth])")
        assert len(images) >= 4 and all(done and width > 0 for _, done, width in images), images
        board = browser.find_element(By.ID, "leaderboard")
        column = [th.text for th in board.find_elements(By.TAG_NAME, "th")].index("psnr")

        def psnrs():
            return [float(row.find_elements(By.TAG_NAME, "td")[column].text)
                    for row in board.find_elements(By.CSS_SELECTOR, "tbody tr")]
        before = psnrs()                                        # the grid's order: A (27.5), then B (28.5)
        header = board.find_elements(By.TAG_NAME, "th")[column]
        header.click()
        assert psnrs() == sorted(before)
        header.click()
        assert psnrs() == sorted(before, reverse=True) and psnrs() != before
        Select(browser.find_element(By.ID, "scale")).select_by_value("smoke")
        assert all(row.is_displayed() for row in board.find_elements(By.CSS_SELECTOR, "tbody tr"))
        Select(browser.find_element(By.ID, "task")).select_by_value("mri_sr")
        assert browser.find_element(By.ID, "figs").is_displayed()
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 0
    finally:
        browser.quit()
