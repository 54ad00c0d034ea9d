"""The benchmark's workflows, run as ``flowrt-worker --app bench.app:app``.

- ``counter``: every ``tick`` runs one trivial action; the data stays the same size
  (two numbers), so the cost of an event does not grow with the history.
- ``twostep``: a process that starts, runs an entry action, takes one ``finish``
  event with another action, and completes: 2 events, 2 actions.
"""

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
app.add_definition({
    "name": "twostep",
    "version": 1,
    "initial": "working",
    "states": {
        "working": {"entry": ["begin"],
                    "on": {"finish": {"target": "done", "actions": ["finish"]}}},
        "done": {"final": True},
    },
})


@app.action("record")
async def record(ctx: ActionContext) -> dict:
    return {"count": ctx.data.get("count", 0) + 1, "last": ctx.event.seq}


@app.action("begin")
async def begin(ctx: ActionContext) -> dict:
    return {"step": 1}


@app.action("finish")
async def finish(ctx: ActionContext) -> dict:
    return {"step": 2}
