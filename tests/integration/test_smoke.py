from tests.support.api import api_client, register_demo


async def test_start_and_read(settings):
    await register_demo(settings)
    async with api_client(settings) as client:
        r = await client.post("/v1/executions", json={"workflow": "order", "input": {"sku": "A"}})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["seq"] == 1 and body["status"] == "pending"
        r = await client.get(f"/v1/executions/{body['execution_id']}")
        assert r.status_code == 200
        assert r.json()["status"] == "running"
