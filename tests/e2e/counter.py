"""The end-to-end test's workflow: every tick appends its seq to the execution's data.

If an event were applied twice or out of order, ``data.seqs`` would show it. The
action itself may run more than once (actions are at-least-once); each call is
also written to a file per worker so the test can see re-runs after a kill.
"""

import asyncio
import os
from pathlib import Path

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

_calls = Path(os.environ.get("E2E_CALLS_DIR", "/tmp")) / f"calls-{os.getpid()}.log"


@app.action("record")
async def record(ctx: ActionContext) -> dict:
    delay = float(ctx.event.payload.get("sleep", 0))
    if delay:
        await asyncio.sleep(delay)
    with _calls.open("a") as f:
        f.write(f"{ctx.execution_id} {ctx.event.seq}\n")
    return {"seqs": [*ctx.data.get("seqs", []), ctx.event.seq]}
