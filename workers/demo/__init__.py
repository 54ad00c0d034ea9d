"""The demo: an order workflow. Run with ``flowrt-worker --app workers.demo:app``."""

from pathlib import Path
from typing import Any

from flowrt import ActionContext, App

app = App()
app.load_definition(Path(__file__).with_name("order.yaml"))


@app.action("reserve_stock")
async def reserve_stock(ctx: ActionContext) -> dict[str, Any]:
    # A real action would pass ctx.idempotency_key to the stock service, so a retry
    # after a crash does not reserve twice.
    ctx.log.info("reserving", sku=ctx.data.get("sku"), key=ctx.idempotency_key)
    return {"reserved": True}


@app.action("notify")
async def notify(ctx: ActionContext) -> dict[str, Any]:
    ctx.log.info("notifying", customer=ctx.data.get("customer"))
    return {"notified": True}
