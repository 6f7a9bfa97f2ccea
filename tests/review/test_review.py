"""The weekly review over a known two-week dataset sent through the real receiver: every section's
numbers are checked exactly against figures computed here from the dataset and the catalog's rates."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from otel_cost.cli import cli
from otel_cost.formats import decimal_text
from otel_cost.pricing import PriceBook, probe_call
from otel_cost.review import Week, build_review, query_text, render_review
from otel_cost.review.render import money
from otel_cost.store import QueryResult

from ..helpers import FakeClock, RunningServer, chat_attributes, export, key_values, make_request, make_span

THIS_WEEK = Week("2026-W48")  # Monday 2026-11-23
PREVIOUS = Week("2026-W47")  # Monday 2026-11-16
AS_OF = datetime(2026, 11, 29, 23, 0, 30, tzinfo=UTC)  # the enforcer's "now" for the cap snapshot
MILLION = Decimal(1_000_000)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def _rates(model: str) -> dict[str, Decimal]:
    card = PriceBook().card(probe_call(model, "openai", AS_OF.date()))
    assert card is not None
    return card.rates()[0][1]


GPT4O, MINI = _rates("gpt-4o"), _rates("gpt-4o-mini")


def _cost(rates: dict[str, Decimal], uncached: int, cached: int, output: int) -> Decimal:
    return uncached * rates["input"] + cached * rates["cache_read"] + output * rates["output"]


@dataclass
class Dataset:
    """What was sent, as the review should report it."""

    answer_w47: Decimal = Decimal(0)
    answer_w48: Decimal = Decimal(0)  # team search, feature answer
    checkout: Decimal = Decimal(0)  # team payments, the same both weeks
    classify: Decimal = Decimal(0)  # team legal, new this week
    unattributed: Decimal = Decimal(0)


def _attributes(team: str | None, feature: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    attributes = chat_attributes(**{"app.feature": feature, "gen_ai.request.model": model, **extra})
    if team is not None:
        attributes["app.team"] = team
    return attributes


def _evaluation(span: Any, label: str, at_ns: int) -> None:
    event = span.events.add()
    event.name = "gen_ai.evaluation.result"
    event.time_unix_nano = at_ns
    event.attributes.extend(
        key_values({"gen_ai.evaluation.name": "task_success", "gen_ai.evaluation.score.label": label})
    )


def _send(server: RunningServer) -> Dataset:
    data = Dataset()
    spans = []
    w47 = PREVIOUS.start + timedelta(days=2, hours=10)  # Wednesday 18 Nov
    w48 = THIS_WEEK.start + timedelta(days=2, hours=10)  # Wednesday 25 Nov

    # search/answer: 10 calls last week; 20 this week in 10 traces, 400 of 1,000 input tokens cached.
    for index in range(10):
        attributes = _attributes(
            "search", "answer", **{"gen_ai.agent.name": "answer-bot", "gen_ai.usage.input_tokens": 1000}
        )
        attributes["gen_ai.usage.output_tokens"] = 400
        spans.append(make_span(attributes, start_ns=_ns(w47 + timedelta(minutes=index))))
        data.answer_w47 += _cost(GPT4O, 1000, 0, 400)
    # Last week's outcomes for search do not count this week.
    last_week_trace = spans[0].trace_id
    spans.append(
        make_span({"otel_cost.outcome": "accepted"}, trace_id=last_week_trace, name="deliver", start_ns=_ns(w47))
    )
    answer_traces = [os.urandom(16) for _ in range(10)]
    for index, trace in enumerate(answer_traces):
        for call in range(2):
            attributes = _attributes(
                "search",
                "answer",
                **{
                    "gen_ai.agent.name": "answer-bot",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.cache_read.input_tokens": 400,
                    "gen_ai.usage.output_tokens": 400,
                },
            )
            start = w48 + timedelta(minutes=index * 3 + call)
            spans.append(make_span(attributes, trace_id=trace, start_ns=_ns(start)))
            data.answer_w48 += _cost(GPT4O, 600, 400, 400)
    # Outcomes: traces 0-5 accepted (an app span's attribute, sent twice: counted once), 6-7 rejected by
    # an evaluation event, 8 accepted then rejected later (its result: rejected), 9 none.
    for index in range(6):
        outcome = make_span(
            {"otel_cost.outcome": "Accepted"}, trace_id=answer_traces[index], name="deliver", start_ns=_ns(w48)
        )
        spans += [outcome, outcome]
    for index in (6, 7):
        judge = make_span({}, trace_id=answer_traces[index], name="judge", start_ns=_ns(w48))
        _evaluation(judge, "fail", _ns(w48) + 5)
        spans.append(judge)
    spans.append(
        make_span({"otel_cost.outcome": "accepted"}, trace_id=answer_traces[8], name="deliver", start_ns=_ns(w48))
    )
    spans.append(
        make_span(
            {"otel_cost.outcome": "rejected"},
            trace_id=answer_traces[8],
            name="feedback",
            start_ns=_ns(w48 + timedelta(hours=1)),
        )
    )
    spans.append(make_span({"otel_cost.outcome": "maybe"}, trace_id=answer_traces[9], name="x", start_ns=_ns(w48)))

    # payments/checkout on gpt-4o-mini: the same five calls both weeks (no mover).
    for week_start in (w47, w48):
        for index in range(5):
            attributes = _attributes("payments", "checkout", "gpt-4o-mini", **{"gen_ai.response.model": "gpt-4o-mini"})
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"] = 2000, 100
            spans.append(make_span(attributes, start_ns=_ns(week_start + timedelta(minutes=30 + index))))
            data.checkout += _cost(MINI, 2000, 0, 100) if week_start == w48 else 0

    # legal/classify: new this week, eight short classifications on gpt-4o; four judged "pass".
    for index in range(8):
        attributes = _attributes(
            "legal", "classify", **{"gen_ai.agent.name": "clause-bot", "gen_ai.response.model": "gpt-4o"}
        )
        attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"] = 500, 20
        span = make_span(attributes, start_ns=_ns(w48 + timedelta(hours=2, minutes=index)))
        if index < 4:
            _evaluation(span, "pass", span.end_time_unix_nano)
        spans.append(span)
        data.classify += _cost(GPT4O, 500, 0, 20)

    # No owner: one call this week.
    spans.append(make_span(_attributes(None, "answer"), start_ns=_ns(w48 + timedelta(hours=3))))
    data.unattributed += _cost(GPT4O, 1200, 0, 300)
    # A model no price covers: three calls this week.
    for index in range(3):
        attributes = _attributes(
            "search",
            "answer",
            "acme-llm-7b",
            **{"gen_ai.provider.name": "vllm", "gen_ai.response.model": "acme-llm-7b"},
        )
        spans.append(make_span(attributes, start_ns=_ns(w48 + timedelta(hours=4, minutes=index))))

    for offset in range(0, len(spans), 25):
        response = export(server, make_request(spans[offset : offset + 25], resource={"service.name": "svc"}))
        assert not response.partial_success.error_message or "rejected" not in response.partial_success.error_message
    return data


@dataclass
class Reviewed:
    server: RunningServer
    data: Dataset

    def run(self, sql: str) -> QueryResult:
        return self.server.query(sql)

    def raw(self, condition: str, week: Week = THIS_WEEK) -> Decimal:
        start, end = int(week.start.timestamp()), int(week.end.timestamp())
        return Decimal(
            self.server.scalar(
                f"SELECT toString(sum(cost)) FROM requests WHERE billable = 1 AND {condition} "
                f"AND timestamp >= toDateTime({start}, 'UTC') AND timestamp < toDateTime({end}, 'UTC')"
            )
        )


@pytest.fixture
def reviewed(make_server: Callable[..., RunningServer]) -> Iterator[Reviewed]:
    clock = FakeClock(AS_OF)
    budgets = [
        {"name": "search-monthly", "scope": {"team": "search"}, "period": "month", "limit": "0.5", "alert_at": [0.5]},
        {"name": "legal-weekly", "scope": {"team": "legal"}, "period": "week", "limit": "1"},
    ]
    server = make_server({"budgets": budgets, "alerts": {"enabled": False}}, clock=clock)
    data = _send(server)
    enforcer = server.server.enforcer
    assert enforcer is not None
    clock.now += timedelta(seconds=61)  # a snapshot is due: the caps as of the end of the data
    enforcer.poll_once()
    from otel_cost.review import publish_rates

    assert server.server.store is not None
    publish_rates(server.server.store, server.config)
    yield Reviewed(server, data)


def _section(review: Any, name: str) -> list[dict[str, Any]]:
    return review.sections[name]


def test_every_section_matches_the_dataset_exactly(reviewed: Reviewed) -> None:
    data = reviewed.data
    review = build_review(reviewed.run, THIS_WEEK, source="test", now=AS_OF)

    # The headline reconciles with sum(cost) over the raw billable rows of each week.
    total = data.answer_w48 + data.checkout + data.classify + data.unattributed
    assert Decimal(review.summary["spend_usd"]) == total == reviewed.raw("1")
    assert Decimal(review.summary["previous_spend_usd"]) == data.answer_w47 + data.checkout
    assert Decimal(review.summary["previous_spend_usd"]) == reviewed.raw("1", PREVIOUS)
    assert review.summary["calls"] == 20 + 5 + 8 + 1 + 3

    # Top movers: search, legal and the unattributed call moved; payments did not.
    movers = {(row["dimension"], row["value"]): row for row in _section(review, "top_movers")}
    assert ("team", "payments") not in movers and ("feature", "checkout") not in movers
    search = movers[("team", "search")]
    assert Decimal(search["this_week_usd"]) == data.answer_w48 == reviewed.raw("team = 'search'")
    assert Decimal(search["last_week_usd"]) == data.answer_w47
    assert Decimal(search["change_usd"]) == data.answer_w48 - data.answer_w47
    expected_percent = round(float((data.answer_w48 - data.answer_w47) / data.answer_w47 * 100), 1)
    assert search["change_percent"] == pytest.approx(expected_percent)
    assert Decimal(movers[("team", "legal")]["change_usd"]) == data.classify
    assert movers[("team", "legal")]["change_percent"] is None  # nothing to compare with
    assert Decimal(movers[("feature", "answer")]["this_week_usd"]) == data.answer_w48 + data.unattributed
    assert Decimal(movers[("model", "gpt-4o")]["change_usd"]) == (
        data.answer_w48 + data.classify + data.unattributed - data.answer_w47
    )
    assert Decimal(movers[("agent", "clause-bot")]["this_week_usd"]) == data.classify
    teams = [row["value"] for row in _section(review, "top_movers") if row["dimension"] == "team"]
    assert teams == ["search", "legal", "unattributed"]  # the largest change first

    # New spenders: exactly what first spent this week.
    new = {(row["dimension"], row["value"]) for row in _section(review, "new_spenders")}
    assert new == {
        ("team", "legal"),
        ("team", "unattributed"),
        ("feature", "classify"),
        ("agent", "clause-bot"),
        ("model", "acme-llm-7b"),
    }
    legal = next(row for row in _section(review, "new_spenders") if row["value"] == "legal")
    assert Decimal(legal["this_week_usd"]) == data.classify and legal["this_week_calls"] == 8

    # Cost per accepted result: answer has 6 accepted (the repeat and last week's do not count), 3
    # rejected (two failed evaluations, one accepted then rejected); classify 4 accepted of 8.
    results = {row["feature"]: row for row in _section(review, "cost_per_result")}
    answer = results["answer"]
    assert (answer["accepted"], answer["rejected"]) == (6, 3)
    assert Decimal(answer["spend_usd"]) == data.answer_w48 + data.unattributed == reviewed.raw("feature = 'answer'")
    assert Decimal(answer["cost_per_accepted_usd"]) == (data.answer_w48 + data.unattributed) / 6
    classify = results["classify"]
    assert (classify["accepted"], classify["rejected"]) == (4, 0)
    assert Decimal(classify["cost_per_accepted_usd"]) == data.classify / 4
    assert classify["accepted_percent"] == 100
    assert results["checkout"]["accepted"] == 0 and results["checkout"]["cost_per_accepted_usd"] is None
    assert review.summary["accepted_results"] == 10

    # Unattributed and unpriced.
    hygiene = _section(review, "unattributed_unpriced")[0]
    assert Decimal(hygiene["unattributed_usd"]) == data.unattributed == reviewed.raw("team = 'unattributed'")
    assert hygiene["unattributed_calls"] == 1 and hygiene["unpriced_calls"] == 3
    assert hygiene["unpriced_tokens"] == 3 * (1200 + 300)
    unpriced = _section(review, "unpriced_models")
    assert [(row["provider"], row["model"], row["call_count"]) for row in unpriced] == [("vllm", "acme-llm-7b", 3)]

    # Floating aliases: gpt-4o served as a dated snapshot (search and the unattributed call).
    floating = _section(review, "floating_aliases")
    assert [(row["requested"], row["served"], row["call_count"]) for row in floating] == [
        ("gpt-4o", ["gpt-4o-2024-08-06"], 21)
    ]
    assert Decimal(floating[0]["spend_usd"]) == data.answer_w48 + data.unattributed

    # Prompt caching: 20 calls read 400 tokens each from the cache; OpenAI has no write premium.
    cache = _section(review, "cache_savings")
    assert [(row["model"], row["cached_input"]) for row in cache] == [("gpt-4o", 8000)]
    saved = 8000 * (GPT4O["input"] - GPT4O["cache_read"])
    assert Decimal(cache[0]["read_savings_usd"]) == saved == Decimal(cache[0]["saved_usd"])
    assert Decimal(cache[0]["write_premium_usd"]) == 0
    assert cache[0]["cache_read_percent"] == pytest.approx(round(8000 / (8000 + 600 * 20 + 500 * 8 + 1200) * 100, 1))
    assert Decimal(review.summary["cache_saved_usd"]) == saved

    # Model mix: classify's short outputs on gpt-4o, re-costed on gpt-4o-mini; answer (400 output tokens
    # a call) is not light work.
    mix = _section(review, "model_mix")
    assert [(row["feature"], row["model"], row["alternative"], row["calls"]) for row in mix] == [
        ("classify", "gpt-4o", "gpt-4o-mini", 8)
    ]
    what_if = _cost(MINI, 8 * 500, 0, 8 * 20)
    assert Decimal(mix[0]["spend_usd"]) == data.classify
    assert Decimal(mix[0]["what_if_usd"]) == what_if
    assert Decimal(mix[0]["saving_usd"]) == data.classify - what_if
    assert Decimal(review.summary["model_mix_saving_usd"]) == data.classify - what_if

    # Trending toward cap: the enforcer's own numbers, month to date for search.
    caps = {row["budget"]: row for row in _section(review, "trending_toward_cap")}
    search_cap = caps["search-monthly"]
    assert Decimal(search_cap["spent_usd"]) == data.answer_w47 + data.answer_w48
    assert Decimal(search_cap["limit_usd"]) == Decimal("0.5")
    assert search_cap["scope"] == "team=search"
    assert Decimal(caps["legal-weekly"]["spent_usd"]) == data.classify


def test_json_csv_and_markdown_carry_the_same_numbers(reviewed: Reviewed) -> None:
    review = build_review(reviewed.run, THIS_WEEK, source="test", now=AS_OF)
    document = json.loads(render_review(review, "json"))
    assert document["week"] == "2026-W48" and document["start"] == "2026-11-23T00:00:00Z"
    assert document["summary"] == json.loads(json.dumps(review.summary))
    total = Decimal(document["summary"]["spend_usd"])
    assert sum(Decimal(day["spend_usd"]) for day in document["daily"] if day["week"] == "this") == total

    lines = render_review(review, "csv").splitlines()
    assert lines[0] == "week,section,rank,field,value"
    assert f"2026-W48,summary,1,spend_usd,{decimal_text(total)}" in lines
    wide = render_review(review, "csv", "model_mix").splitlines()
    assert wide[0].startswith("week,feature,operation,provider,model,alternative")
    assert len(wide) == 2

    from markdown_it import MarkdownIt

    text = render_review(review, "md")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables = [token for token in tokens if token.type == "table_open"]
    assert all(review.sections.values())  # this dataset fills every section
    assert len(tables) == 1 + len(review.sections)  # the headline, then one table per section
    rows_per_table = []
    for token in tokens:
        if token.type == "table_open":
            rows_per_table.append(0)
        elif token.type == "tr_open":
            rows_per_table[-1] += 1
    assert rows_per_table[0] == 2  # headline: header and one row of figures
    assert rows_per_table[1:] == [len(rows) + 1 for rows in review.sections.values()]
    headers = [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "th_open"]
    assert {"this week", "per accepted", "what if", "saved"} <= set(headers)
    rendered = MarkdownIt("commonmark").enable("table").render(text)
    assert '<td style="text-align:right">$' in rendered
    # The week's change sits with this week's spend, not with the week before's figure.
    headline = [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "td_open"][:2]
    change = Decimal(str(review.summary["change_percent"])).quantize(Decimal("0.1"))
    assert change > 0
    assert headline == [
        f"{money(review.summary['spend_usd'])} (+{change}%)",
        money(review.summary["previous_spend_usd"]),
    ]


def test_the_query_files_run_unchanged_with_the_week_parameter(reviewed: Reviewed) -> None:
    """What clickhouse-client --param_week does: the parameter bound, nothing else touched."""
    text = query_text("top_movers", THIS_WEEK)
    assert "'2026-W48'" in text and "{week:String}" not in text
    rows = reviewed.run(text).dicts()
    assert any(row["value"] == "search" for row in rows)
    with pytest.raises(ValueError, match="YYYY-Www"):
        Week("2026-48")
    with pytest.raises(ValueError, match="no ISO week 53"):
        Week("2027-W53")
    assert Week("2026-W53").start == datetime(2026, 12, 28, tzinfo=UTC)  # 2026 has 53 ISO weeks


def test_the_files_run_unchanged_with_the_engine_binding_the_parameter(
    reviewed: Reviewed, chdb_path: Any, store_url: str
) -> None:
    """As clickhouse-client --param_week=2026-W48 --queries-file FILE: the file's text untouched, the
    engine binds {week:String}; the answers equal the review's."""
    import chdb.session

    from otel_cost.review import QUERIES, query_path

    database = store_url.split("database=", 1)[1]
    session = chdb.session.Session(str(chdb_path))
    try:
        session.query(f"USE {database}")
        for name in QUERIES:
            unchanged = session.query(query_path(name).read_text(), "JSONCompact", params={"week": "2026-W48"})
            bound = QueryResult.from_json_compact(unchanged.bytes())
            assert bound.rows == reviewed.run(query_text(name, THIS_WEEK)).rows, name
    finally:
        session.close()


def test_the_review_command_through_the_server_and_from_the_store(
    reviewed: Reviewed, tmp_path: Any, store_url: str
) -> None:
    runner = CliRunner()
    out = tmp_path / "review.html"
    result = runner.invoke(
        cli, ["review", "--week", "2026-W48", "--format", "html", "--out", str(out), "--api", reviewed.server.api_url]
    )
    assert result.exit_code == 0, result.output
    assert "answered by the server" in result.stderr and "wrote the 2026-W48 review (html)" in result.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 3
    for fetches in ("<script", "<link", "<img", "src=", "href=", "url(", "@import"):
        assert fetches not in page, fetches  # stands alone: nothing to fetch

    result = runner.invoke(cli, ["review", "--week", "2026-W48", "--format", "json", "--api", reviewed.server.api_url])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert Decimal(document["summary"]["spend_usd"]) == reviewed.raw("1")

    bad = runner.invoke(cli, ["review", "--week", "48", "--api", reviewed.server.api_url])
    assert bad.exit_code == 2 and "YYYY-Www" in bad.output

    # No server: the command opens the store itself (and says so), with the same numbers.
    api_url, expected = reviewed.server.api_url, reviewed.raw("1")
    reviewed.server.close()
    result = runner.invoke(
        cli, ["review", "--week", "2026-W48", "--format", "md", "--api", api_url, "--store", store_url]
    )
    assert result.exit_code == 0, result.output
    assert "opened chdb:" in result.stderr and "directly" in result.stderr
    assert "# Weekly LLM spend review, 2026-W48" in result.stdout
    assert f"| {money(expected)} |" in result.stdout.replace("| spend |", "")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium (.ci/run) and sets this, so a missing browser fails there instead of skipping.
REQUIRE_CHROMIUM = os.environ.get("OTEL_COST_REQUIRE_CHROMIUM") == "1"


def _screenshot(page: Path, png: Path, profile: Path) -> None:
    assert CHROMIUM is not None
    # The flags keep a headless Chromium off the network (this machine refuses it) and out of a sandbox
    # that root cannot use. Its output goes to a file, not a pipe: helper processes it leaves behind
    # would hold a pipe open and make the wait hang.
    log = profile.with_suffix(".log")
    with log.open("wb") as output:
        browser = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                "--window-size=1200,2600",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            browser.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)
    assert png.exists(), log.read_text(errors="replace")[-2000:]


@pytest.mark.skipif(
    CHROMIUM is None and not REQUIRE_CHROMIUM, reason="Chromium is not installed (apt install chromium)"
)
def test_the_html_review_renders_its_charts_in_chromium(reviewed: Reviewed, tmp_path: Path) -> None:
    from PIL import Image

    from otel_cost.review.charts import PALETTE

    review = build_review(reviewed.run, THIS_WEEK, source="test", now=AS_OF)
    page = tmp_path / "review.html"
    page.write_text(render_review(review, "html"))
    png = tmp_path / "review.png"
    _screenshot(page, png, tmp_path / "profile")
    shots = Path(os.environ.get("OTEL_COST_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    if shots != tmp_path:
        shutil.copy(png, shots / "review-2026-W48.png")

    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 2600)
    raw = image.tobytes()
    counts = Counter(raw[i : i + 3] for i in range(0, len(raw), 3))

    def pixels(colour: str) -> int:
        return counts[bytes.fromhex(colour[1:])]

    # Painted SVG: the daily columns and the bars (this week), last week's columns, the movers' increase.
    assert pixels(PALETTE["this"]) > 5_000
    assert pixels(PALETTE["previous"]) > 1_000
    assert pixels(PALETTE["up"]) > 1_000
    # And text: a page that failed to render is blank.
    assert len(counts) > 50
