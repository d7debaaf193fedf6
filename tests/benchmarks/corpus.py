"""A reproducible stream of realistic UseDesk webhooks (benchmarks, fault and load tests).

Shapes follow `tests/fixtures/usedesk/` (ids as strings in the documented create example, as
numbers elsewhere, `custom_fields` inside `ticket` or at the top level, a `client` object on
changes and comments), with Cyrillic text filling each body to a size drawn from 1-4 KB.

Each ticket tells a short story: created → comments from the client and agents → changes
(assignment, status, subject, tags) → sometimes a rating, now and then re-rated later. Tickets
overlap in time, so the stream interleaves many of them. Then the delivery faults a receiver
sees: a few webhooks arrive late (out of order within their ticket), a few are sent twice.

`generate(count, seed)` always returns the same webhooks for the same arguments.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from shared.usedesk import Kind

SEED = 20240305
SECRET = "bench-secret-7c41d9e0a5b38f62"
CONTENT_TYPE = "application/json"
MIN_BYTES, MAX_BYTES = 1024, 4096
LATE_SHARE = 0.03  # arrives up to LATE_REACH webhooks after its place
LATE_REACH = 1000
DUPLICATE_SHARE = 0.04  # sent again (same bytes) a little later
FIRST_TICKET = 4_100_000
START = datetime(2024, 3, 4, 9, 0, 0)  # UseDesk's naive local time

_PROSE = (
    "здравствуйте заказ доставка код подтверждения приложение оплата карта возврат средств "
    "личный кабинет пароль не приходит ошибка при входе спасибо за обращение уточните "
    "пожалуйста номер телефона курьер перезвонил отменить подписку списание проверили "
    "передали специалистам ответим в течение дня вопрос решён обновите версию скриншот чек "
    "промокод баланс бонусы адрес склад трек номер посылка задержка "
)
_WORDS = _PROSE.split()
_SUBJECTS = (
    "Не приходит код подтверждения",
    "Вопрос по доставке",
    "Ошибка оплаты картой",
    "Возврат средств",
    "Не могу войти в личный кабинет",
    "Списали деньги дважды",
    "Где мой заказ?",
)
_NAMES = ("Марина Ковалёва", "Олег Петров", "Анна Смирнова", "Игорь Волков", "Дарья Орлова")
_TAGS = ("vip", "срочно", "доставка", "оплата", "повтор")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One POST as UseDesk would send it."""

    kind: Kind
    body: bytes
    ticket_id: int
    content_type: str = CONTENT_TYPE


def generate(count: int, seed: int = SEED, secret: str = SECRET) -> list[Webhook]:
    """`count` webhooks in arrival order: interleaved tickets, some late, some duplicated."""
    rng = random.Random(seed)
    timed: list[tuple[datetime, int, Webhook]] = []
    ticket_id = FIRST_TICKET
    while len(timed) < count:
        opened = START + timedelta(seconds=rng.uniform(0, 6 * 3600))
        for at, webhook in _Story(rng, ticket_id, secret).webhooks(opened):
            timed.append((at, len(timed), webhook))
        ticket_id += 1
    timed.sort(key=lambda item: (item[0], item[1]))
    stream = [webhook for _, _, webhook in timed]
    return _with_faults(rng, stream)[:count]


def _with_faults(rng: random.Random, stream: list[Webhook]) -> list[Webhook]:
    out = list(stream)
    for index in range(len(out) - 1):
        if rng.random() < LATE_SHARE:
            later = min(len(out) - 1, index + rng.randint(1, LATE_REACH))
            out.insert(later, out.pop(index))
    for index in range(len(out) - 1, -1, -1):
        if rng.random() < DUPLICATE_SHARE:
            out.insert(min(len(out), index + rng.randint(1, 50)), out[index])
    return out


def sentences(rng: random.Random, size: int) -> str:
    """Cyrillic prose of about `size` UTF-8 bytes."""
    parts: list[str] = []
    used = 0
    while used < size:
        words = rng.sample(_WORDS, rng.randint(5, 12))
        sentence = " ".join(words).capitalize() + ". "
        parts.append(sentence)
        used += len(sentence.encode())
    return "".join(parts).encode()[:size].decode(errors="ignore")


def _date(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


class _Story:
    """The webhooks of one ticket, each with its UseDesk time."""

    def __init__(self, rng: random.Random, ticket_id: int, secret: str) -> None:
        self.rng = rng
        self.ticket_id = ticket_id
        self.secret = secret
        self.client_id = rng.randint(5_000_000, 5_900_000)
        self.name = rng.choice(_NAMES)
        self.company_id = 160442
        self.status = 8
        self.subject = rng.choice(_SUBJECTS)
        self._seq = (ticket_id - FIRST_TICKET) * 16  # < 16 comments and changes a ticket

    def _next_id(self, base: int) -> int:
        self._seq += 1
        return base + self._seq

    def webhooks(self, opened: datetime) -> Iterator[tuple[datetime, Webhook]]:
        rng = self.rng
        at = opened
        yield at, self._finish("ticket_created", self._created(at))
        first = True
        for _ in range(rng.choice((1, 2, 2, 3, 3, 4, 6))):
            at += timedelta(seconds=rng.randint(20, 1800))
            yield at, self._finish("comment_created", self._comment(at, first))
            first = False
            if rng.random() < 0.7:
                at += timedelta(seconds=rng.randint(1, 600))
                yield at, self._finish("ticket_changed", self._changed(at))
        if rng.random() < 0.35:
            rating_id = 2_200_000 + self.ticket_id
            created = at + timedelta(seconds=rng.randint(60, 7200))
            yield created, self._finish("rating", self._rating(rating_id, created, created))
            if rng.random() < 0.15:
                updated = created + timedelta(seconds=rng.randint(60, 3600))
                yield updated, self._finish("rating", self._rating(rating_id, created, updated))

    def _finish(self, kind: Kind, payload: dict[str, Any]) -> Webhook:
        """Fill the payload's text slot (`\x00`) so the body lands on its drawn size."""
        target = int(self.rng.triangular(MIN_BYTES, MAX_BYTES, 1600))
        skeleton = msgspec.json.encode(payload)
        filler = sentences(self.rng, max(0, target - len(skeleton)))
        body = skeleton.replace(b"\\u0000", msgspec.json.encode(filler)[1:-1], 1)
        return Webhook(kind, body, self.ticket_id)

    def _client(self) -> dict[str, Any]:
        return {
            "id": self.client_id,
            "name": self.name,
            "avatar": None,
            "note": "",
            "emails": [{"email": f"client{self.client_id}@example.org"}],
            "phones": [{"phone": f"7916{self.client_id:07d}", "type": "mobile"}],
            "additional_ids": [{"value": f"crm-{self.client_id}"}],
        }

    def _fields(self) -> list[dict[str, Any]]:
        order = f"A-{self.rng.randint(10000, 99999)}"
        return [
            {"id": 61, "name": "Order number", "value": order},
            {"id": 64, "name": "Платформа", "value": self.rng.choice(("Android", "iOS", "Web"))},
        ]

    def _created(self, at: datetime) -> dict[str, Any]:
        ticket: dict[str, Any] = {
            "id": str(self.ticket_id),
            "status_id": "8",
            "subject": self.subject,
            "client_id": str(self.client_id),
            "assignee_id": None,
            "group": "0",
            "last_updated_at": _date(at),
            "channel_id": "58213",
            "email": f"client{self.client_id}@example.org",
            "published_at": _date(at),
            "company_id": str(self.company_id),
            "additional_id": f"ORD-{self.ticket_id}",
            "message": "<p>\x00</p>",
            "custom_blocks": [
                {"name": "CRM card", "url": "https://crm.example.org/b", "secret_key": "b7Qz-19f"}
            ],
        }
        if self.rng.random() < 0.8:  # the documented example's shape
            ticket["custom_fields"] = self._fields()
            return {"secret": self.secret, "ticket": ticket}
        ticket.update(id=self.ticket_id, status_id=8, client_id=self.client_id, group=None)
        return {
            "secret": self.secret,
            "ticket": ticket,
            "client": self._client(),
            "custom_fields": self._fields(),
        }

    def _comment(self, at: datetime, first: bool) -> dict[str, Any]:
        agent = not first and self.rng.random() < 0.6
        return {
            "secret": self.secret,
            "comment": {
                "id": self._next_id(400_000_000),
                "message": "<p>\x00</p>",
                "type": "public" if not agent or self.rng.random() < 0.8 else "private",
                "from": "user" if agent else "client",
                "user_id": 48211 if agent else None,
                "client_id": None if agent else self.client_id,
                "ticket_id": self.ticket_id,
                "is_first": int(first),
                "delivered": 0,
                "readed": 0,
                "published_at": _date(at),
            },
            "custom_fields": self._fields(),
            "client": self._client(),
        }

    def _changed(self, at: datetime) -> dict[str, Any]:
        rng = self.rng
        old = self.status
        self.status = rng.choice((1, 2, 2, 3, 5, 6)) if old != 2 else rng.choice((1, 3))
        data = [
            {"target": "status_id", "value": str(self.status), "old_value": str(old)},
            {"target": "assignee_id", "value": str(rng.choice((48211, 50177))), "old_value": None},
        ]
        if rng.random() < 0.3:
            data.append({"target": "new_tags", "value": rng.choice(_TAGS), "old_value": None})
        by_rule = rng.random() < 0.2
        return {
            "secret": self.secret,
            "trigger": {
                "id": self._next_id(90_000_000),
                "trigger_id": 7731 if by_rule else None,
                "user_id": None if by_rule else 48211,
                "ticket_id": self.ticket_id,
                "data": data,
                "changed_at": _date(at),
                "old_status": old,
                "new_status": self.status,
                "company_id": self.company_id,
            },
            "custom_fields": [*self._fields(), {"id": 70, "name": "Описание", "value": "\x00"}],
            "client": self._client(),
        }

    def _rating(self, rating_id: int, created: datetime, updated: datetime) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "csi": {
                "id": rating_id,
                "user_id": 48211,
                "client_id": self.client_id,
                "ticket_id": self.ticket_id,
                "rating": self.rng.choice((1, 2, 3, 3, 3)),
                "company_id": self.company_id,
                "ticket_comment_id": None,
                "comment": "\x00",
                "updated_at": _date(updated),
                "created_at": _date(created),
            },
            "client": self._client(),
        }
