"""`make demo`: post the fixture story to a running `make run`, then show the ticket it made.

The story (tests/fixtures/usedesk/): a ticket is created, an agent comments, the ticket is
solved and reassigned, the client rates it. The webhooks are posted in a shuffled order, one of
them twice, because that is how they arrive in real life; the row comes out the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import asyncpg

from shared.settings import Settings, load_settings

STORY = Path(__file__).parent.parent / "tests" / "fixtures" / "usedesk"
ORDER = (
    "ticket_changed.json",
    "rating.json",
    "ticket_created.json",
    "comment_created.json",
    "ticket_changed.json",
)
TICKET_ID = 3318840
TICKET = """
SELECT ticket_id, status_id, subject, assignee_id, client_id, email, comments_count, rating,
       first_response_at, resolved_at, reopened_count, status_durations, suspected_gaps, partial
FROM tickets WHERE ticket_id = $1
"""


async def post_story(settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.http_port}/webhooks/usedesk"
    secret = settings.secrets[0] if settings.secrets else "development-secret"
    async with aiohttp.ClientSession() as session:
        for name in ORDER:
            payload = json.loads((STORY / name).read_text(encoding="utf-8"))
            payload["secret"] = secret
            async with session.post(url, json=payload) as response:
                answer = await response.text()
                print(f"POST {name:<22} -> {response.status} {answer}")
                if response.status != 200:
                    raise SystemExit("demo: the ingress refused a webhook; is `make run` running?")


async def show_ticket(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(100):
            row = await conn.fetchrow(TICKET, TICKET_ID)
            if row is not None and row["rating"] is not None and not row["partial"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("demo: the ticket row did not appear; is the worker running?")
    finally:
        await conn.close()
    print(f"\ntickets row {TICKET_ID}:")
    for key, value in row.items():
        print(f"  {key:<18} {value}")


async def main() -> None:
    settings = load_settings()
    try:
        await post_story(settings)
    except aiohttp.ClientConnectionError as exc:
        raise SystemExit(
            f"demo: cannot reach the ingress ({exc}); start it with `make run`"
        ) from exc
    await show_ticket(settings)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
