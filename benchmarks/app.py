"""The benchmark's workflow: one action per event, data of constant size."""

from flowrt import ActionContext, App

app = App()
app.add_definition({
    "name": "counter",
    "version": 1,
    "initial": "open",
    "states": {
        "open": {"on": {"tick": {"actions": ["record"]}, "close": {"target": "closed"}}},
        "closed": {"final": True},
    },
})


@app.action("record")
async def record(ctx: ActionContext) -> dict:
    return {"count": ctx.data.get("count", 0) + 1, "last": ctx.event.seq}
