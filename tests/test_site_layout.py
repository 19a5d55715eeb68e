"""The documentation site as a reader's browser lays it out (headless Chromium, which
.ci/run installs): at 1280 and 1024 px wide nothing of the home page's Keras/jaxnet table is
cut off, and ``fit`` is the first entry of its API page, within the first screen. The site is
served on 127.0.0.1; a probe page loads each page in an iframe of that width and writes what it
measured into its DOM, which Chromium's --dump-dom prints."""

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<!doctype html><html><body>
<iframe id="page" src="PAGE" style="width:WIDTHpx;height:900px;border:0"></iframe>
<pre id="result">pending</pre>
<script>
document.getElementById("page").addEventListener("load", function () {
  var doc = this.contentDocument, out = {clipped: [], entries: []};
  var content = doc.querySelector("article.md-content__inner").getBoundingClientRect();
  doc.querySelectorAll("table.side-by-side, table.side-by-side pre").forEach(function (el) {
    if (el.scrollWidth > el.clientWidth + 1) out.clipped.push(el.tagName + " scrolls");
    if (el.getBoundingClientRect().right > content.right + 1) {
      out.clipped.push(el.tagName + " past the text column");
    }
    for (var up = el.parentElement; up && up !== doc.body; up = up.parentElement) {
      if (up.scrollWidth > up.clientWidth + 1 && getComputedStyle(up).overflowX !== "visible") {
        out.clipped.push(el.tagName + " cut by " + up.className);
        break;
      }
    }
  });
  out.tables = doc.querySelectorAll("table.side-by-side").length;
  doc.querySelectorAll("[id^='jaxnet.']").forEach(function (el) {
    out.entries.push([el.id, Math.round(el.getBoundingClientRect().top)]);
  });
  document.getElementById("result").textContent = JSON.stringify(out);
});
</script></body></html>"""


def _measure(site_dir, page: str, width: int = 1280) -> dict:
    (site_dir / "_probe.html").write_text(PROBE.replace("PAGE", page).replace("WIDTH",
                                                                              str(width)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
             "--virtual-time-budget=15000", "--dump-dom",
             f"http://127.0.0.1:{server.server_address[1]}/_probe.html"],
            capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    found = re.search(r'<pre id="result">(.*?)</pre>', out.stdout, re.S)
    assert found and found.group(1) != "pending", out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run "
                                              "installs it: apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 1024])
def test_the_home_pages_table_fits_the_window(site, width):
    measured = _measure(site, "index.html", width)
    assert measured["tables"] == 1 and measured["clipped"] == [], measured


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run "
                                              "installs it: apt-get install chromium)")
def test_fit_is_the_first_entry_of_its_page_within_the_first_screen(site):
    entries = _measure(site, "api/train/index.html")["entries"]
    names = [name for name, _ in entries if name.count(".") == 2]
    assert names[0] == "jaxnet.train.fit", names
    assert dict(entries)["jaxnet.train.fit"] < 900, entries
