"""The static report (userloop.report): every section from a real demo-like folder, stages that did not run,
broken inputs, HTML escaping, the SVG charts and the ``userloop report`` command."""

import json
import re
import shutil

import pytest
from report_helpers import demo_folder, write_manifest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.demo import STAGES
from userloop.report import build_report, svg
from userloop.report.html import SECTIONS
from userloop.report.manifest import PATH_KEYS


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory.getbasetemp() / "report-demo")


@pytest.fixture(scope="module")
def html(demo) -> str:
    return build_report(demo).read_text(encoding="utf-8")


def section(html: str, key: str) -> str:
    return re.search(rf'<section id="{key}">(.*?)</section>', html, re.DOTALL).group(1)


def text(fragment: str) -> str:
    """The visible text of an HTML fragment (tags dropped, entities left)."""
    return re.sub(r"<[^>]+>", " ", fragment)


def test_every_section_renders_from_the_demo_folder(demo, html):
    assert (demo / "report" / "index.html").is_file()
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title.replace("&", "&amp;")}</h2>' in html
    assert 'class="problem"' not in html, re.findall(r'class="problem">([^<]*)', html)
    assert "Not run" not in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    charts = {key: section(html, key).count("<svg") for key, _ in SECTIONS}
    assert charts == {"run": 0, "data": 0, "training": 3, "metrics": 1, "distributions": 2, "endings": 1,
                      "assistant": 1, "validity": 2, "rlhi": 1, "usereval": 1}


def test_sections_show_the_numbers_of_their_files(demo, html):
    prepared = json.loads((demo / "prepared" / "report.json").read_text())
    data = text(section(html, "data"))
    assert f"{prepared['conversations']['kept']:,}" in data and "Testbed" in data
    rlhi = json.loads((demo / "rlhi" / "report.json").read_text())
    assert re.search(rf"preference pairs\s+{rlhi['pairs']}\b", text(section(html, "rlhi")))
    assert "the pipeline end to end, not personalisation" in text(section(html, "rlhi"))  # what the demo's size can show
    training = section(html, "training")
    assert "User LM loss" in training and "Assistant loss" in training and "unigram baseline" in training
    assert "DPO loss" in training and "No loss curve" not in training
    assistant = text(section(html, "assistant"))
    assert "74.6%" in assistant or "paper, GPT-4o assistant, GPT-4o user" in assistant
    assert "Realism of the simulated users" in assistant   # beside the scores: the realism of their users
    realism = json.loads((demo / "sims" / "open" / "summary.json").read_text())["realism"]
    assert "real users (test split)" in text(section(html, "endings")) and realism["human"]["conversations"] > 0
    usereval = json.loads((demo / "usereval" / "report.json").read_text())
    assert f"{usereval['personalisation']['win_rate']:.1%}" in text(section(html, "usereval"))
    metrics = text(section(html, "metrics"))
    assert "paper: UserLM-8b" in metrics and "63.54" in metrics and "tiny user LM" in metrics
    records = [json.loads(line) for line in (demo / "sims" / "open" / "conversations.jsonl").read_text().splitlines()]
    endings = text(section(html, "endings"))
    assert f"simulated (open) (n={len(records)})" in endings and "cut at the turn cap" in endings


def test_the_validity_section_shows_the_simulators_the_outcomes_and_the_drop(demo, html):
    report = json.loads((demo / "validity" / "report.json").read_text())
    validity = section(html, "validity")
    shown = text(validity)
    assert "against the ground truth (95% CI)" in shown and "naive protocol" in shown and "user-lm" in shown
    for row in ("Spearman", "Kendall tau-b", "MAE success", "MAE turns", "MAE feedback", "MAE satisfied"):
        assert row in shown, row
    kendall = report["validity"]["naive"]["kendall"]
    assert ("undefined" if kendall["value"] is None else f"{kendall['value']:.2f} [{kendall['ci95'][0]:.2f}, ") in shown
    assert "Task success per assistant, by user" in validity and "Multi-turn drop: single-turn minus" in validity
    outcome_rows = re.findall(r"<tr><td>(careful|standard|hasty|tone-deaf|sloppy)</td><td>([^<]+)</td>", validity)
    assert len(outcome_rows) == 5 * 3   # every assistant with each user
    careful = report["outcomes"]["ground_truth"]["careful"]["success"]
    assert re.search(rf"<td>careful</td><td>ground truth</td><td class=num>[\d.]+</td><td class=num>{careful:.1%}</td>",
                     validity)
    hasty = report["multi_turn_drop"]["hasty"]["drop_points"]["ground_truth"]
    assert f"{hasty['value']:+.1f} [{hasty['ci95'][0]:+.1f}, {hasty['ci95'][1]:+.1f}]" in shown


def test_report_of_an_eval_validity_folder_is_its_validity_section(demo, tmp_path):
    folder = tmp_path / "validity"
    shutil.copytree(demo / "validity", folder, ignore=shutil.ignore_patterns("runs"))
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, (result.output, result.exception)
    html = (folder / "report" / "index.html").read_text()
    assert re.findall(r'<section id="(\w+)">', html) == ["validity"]
    assert "<h1>userloop eval-validity report</h1>" in html and 'class="problem"' not in html
    assert section(html, "validity").count("<svg") == 2


def test_a_manifest_with_every_path_null_says_not_run(tmp_path):
    stages = [{"name": name, "title": title, "seconds": 0.0, "status": "skipped", "detail": f"skipped {name} on purpose"}
              for name, title in STAGES]
    root = write_manifest(tmp_path / "empty", {key: None for key in PATH_KEYS}, stages)
    html = build_report(root).read_text()
    for key, _ in SECTIONS[1:]:
        assert "Not run" in section(html, key), key
    assert "skipped rlhi on purpose" in section(html, "rlhi")
    assert "skipped simulate on purpose" in section(html, "endings")
    assert "<svg" not in html


def test_a_corrupt_or_missing_file_is_one_line_in_its_section(demo, tmp_path):
    root = tmp_path / "broken"
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "metrics.json").write_text('{"Human": {"first_turn_diversity": 9')
    (root / "usereval").mkdir()
    paths = {key: str(demo / key) for key in ("prepared", "rlhi")}
    paths |= {"metrics": "metrics", "usereval": "usereval", "simulations": {"open": str(demo / "sims" / "open")}}
    html = build_report(write_manifest(root, paths, [])).read_text()
    [problem] = re.findall(r'class="problem">([^<]*)', section(html, "metrics"))
    assert "metrics.json is not valid JSON" in problem
    assert re.findall(r'class="problem">([^<]*)', section(html, "usereval")) == [f"file not found: {root / 'usereval' / 'report.json'}"]
    assert "<svg" in section(html, "distributions")      # the sections with good inputs still render
    assert "Not run." in section(html, "assistant")       # no stage in the manifest: no detail to give


def test_text_from_the_files_is_escaped(demo, tmp_path):
    root = tmp_path / "escape"
    shutil.copytree(demo / "rlhi", root / "rlhi", ignore=shutil.ignore_patterns("pairs_dataset"))
    personas = root / "rlhi" / "personas.jsonl"
    row = json.loads(personas.read_text().splitlines()[0]) | {"persona": "<script>alert('persona')</script> & co"}
    personas.write_text(json.dumps(row) + "\n")
    shutil.copytree(demo / "metrics", root / "metrics", ignore=shutil.ignore_patterns("charts"))
    metrics = json.loads((root / "metrics" / "metrics.json").read_text())
    (root / "metrics" / "metrics.json").write_text(json.dumps({"<script>alert(1)</script>": metrics["Human"]}))
    paths = {"rlhi": "rlhi", "metrics": "metrics", "prepared": str(demo / "prepared"),
             "simulations": {"<img src=x onerror=alert(2)>": str(demo / "sims" / "open")}}
    html = build_report(write_manifest(root, paths, [], command="userloop demo --out '<b>x</b>'")).read_text()
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#x27;persona&#x27;)&lt;/script&gt; &amp; co" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_nice_ticks():
    assert svg.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(0, 94.55) == [0, 20, 40, 60, 80, 100]
    assert svg.nice_ticks(5.04, 6.14) == [5.0, 5.5, 6.0, 6.5]
    assert svg.nice_ticks(3, 3) == [3, 4, 5, 6]


def test_line_chart_draws_each_series_and_escapes_names():
    chart = svg.line_chart({"train": [(1, 5.0), (2, 4.0), (3, 3.5)], "a<b": [(3, 3.9)]}, title="T & <loss>",
                           x_label="step", y_label="loss", references={"baseline": 4.5})
    assert chart.startswith("<svg") and chart.endswith("</svg>")
    assert chart.count("<polyline") == 2 and chart.count("<circle") == 4
    assert "T &amp; &lt;loss&gt;" in chart and "a&lt;b" in chart and 'class="reference"' in chart
    with pytest.raises(ValueError):
        svg.line_chart({"train": []}, title="empty", x_label="x", y_label="y")


def test_bar_chart_skips_missing_values_and_draws_intervals():
    chart = svg.bar_chart(["overall", "math"], {"single": [0.5, None], "multi": [0.25, 0.75]}, title="solved",
                          y_label="solved", intervals={"multi": [(0.1, 0.4), None]}, percent=True, y_max=1.0)
    assert chart.count("<rect") == 3 + 2            # three bars, two legend swatches
    assert chart.count('class="interval"') == 1 and "100%" in chart


def test_histogram_shares_per_bin():
    chart = svg.histogram({"real": [1, 1, 2, 9], "sim": [2, 3]}, [1, 2, 3], title="turns", x_label="user turns")
    shares = re.findall(r"<title>([^<]*): ([\d.]+)%</title></rect>", chart)
    assert ("real (n=4), 1", "50.0") in shares and ("real (n=4), 3+", "25.0") in shares
    assert ("sim (n=2), 2", "50.0") in shares and ("sim (n=2), 3+", "50.0") in shares


def test_report_command(demo, tmp_path):
    runner = CliRunner()
    out = tmp_path / "elsewhere" / "report.html"
    mistyped = runner.invoke(app, ["report", str(demo), "--out", str(out)])  # a missing folder is not created
    assert mistyped.exit_code == 2 and mistyped.stderr.startswith("error: --out") and "mkdir -p" in mistyped.stderr
    assert len(mistyped.stderr.strip().splitlines()) == 1 and not out.parent.exists()
    out.parent.mkdir()
    result = runner.invoke(app, ["report", str(demo), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.stdout
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a demo folder" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
