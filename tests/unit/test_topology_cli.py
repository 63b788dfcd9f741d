"""`streamer topology APP` (issue 17, item 7): the app's parts as a tree, Mermaid or dot."""

from __future__ import annotations

from pathlib import Path

from tests.kafkatools import run_cli

SHOP = """\
import streamer

app = streamer.App("shop")
orders = app.topic("orders", key_type=str, value_type=dict, partitions=4)
alerts = app.topic("alerts", key_type=str, value_type=dict)
per_minute = app.topic("per-minute", key_type=str, value_type=dict)
by_customer = orders.group_by(lambda event: event.value["customer"], name="by-customer")
totals = app.table("totals", default=int, value_type=int)
clicks = app.table("clicks", default=int, value_type=int).tumbling(60.0, grace=10.0)


@app.agent(by_customer, concurrency=2, on_error=streamer.ErrorPolicy(retries=5))
async def total(stream):
    async for event in stream:
        totals[event.key] += event.value["amount"]


@app.timer(10.0, on_leader=True)
async def report():
    pass


@app.crontab("0 * * * *", timezone="Europe/Paris")
async def hourly():
    pass
"""

TREE = """\
app shop (group shop, at_least_once)
├── agents
│   ├── by-customer-repartitioner (group_by 'by-customer'), 1 lane per partition
│   │   ├── reads orders (4 partitions, key str, value json)
│   │   ├── yields to shop-by-customer-repartition (4 partitions, key str, value json)
│   │   └── dead letters to shop-by-customer-repartitioner-dlq (after 3 retries)
│   └── total, 2 lanes per partition
│       ├── reads shop-by-customer-repartition (4 partitions, key str, value json)
│       └── dead letters to shop-total-dlq (after 5 retries)
├── tables
│   ├── totals (key str, value int)
│   │   ├── changelog shop-totals-changelog
│   │   └── co-partitioned with shop-by-customer-repartition
│   └── clicks (key str, value int)
│       ├── changelog shop-clicks-changelog
│       ├── co-partitioned with shop-by-customer-repartition
│       └── tumbling 60s windows, grace 10s, kept 86400s
├── timers
│   ├── report every 10s, on the leader only
│   └── hourly cron '0 * * * *' (Europe/Paris)
└── other topics (sent to from code, or read elsewhere)
    ├── alerts (? partitions, key str, value json)
    └── per-minute (? partitions, key str, value json)"""


def _shop(tmp_path: Path) -> Path:
    (tmp_path / "shop.py").write_text(SHOP)
    return tmp_path


def test_tree(tmp_path: Path) -> None:
    result = run_cli("topology", "shop.py", cwd=_shop(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == TREE


def test_mermaid(tmp_path: Path) -> None:
    result = run_cli("topology", "shop.py", "--format", "mermaid", cwd=_shop(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    for line in [
        '  topic_orders[["orders"]]',
        '  agent_total("total (2 lanes)")',
        '  table_clicks[("clicks (tumbling 60s windows, grace 10s, kept 86400s)")]',
        '  timer_report{{"report: every 10s"}}',
        "  topic_orders --> agent_by_customer_repartitioner",
        "  agent_by_customer_repartitioner --> topic_shop_by_customer_repartition",
        "  topic_shop_by_customer_repartition --> agent_total",
        "  agent_total -. dead letters .-> dlq_shop_total_dlq",
        "  table_totals -. changelog .-> topic_shop_totals_changelog",
    ]:
        assert line in lines, line


def test_dot(tmp_path: Path) -> None:
    result = run_cli("topology", "shop.py", "--format", "dot", cwd=_shop(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (lines[0], lines[1], lines[-1]) == ('digraph "shop" {', "  rankdir=LR;", "}")
    assert '  table_totals [label="totals", shape=cylinder];' in lines
    assert "  topic_shop_by_customer_repartition -> agent_total;" in lines
    assert '  agent_total -> dlq_shop_total_dlq [label="dead letters", style=dotted];' in lines


def test_an_app_that_does_not_load_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text("import streamer\napp = streamer.App('shop')\nboom()\n")
    result = run_cli("topology", "shop.py", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: shop.py:3: NameError: name 'boom' is not defined (while loading app 'shop.py'; "
        "--debug shows the traceback)"
    )
