"""What differs between the text AI functions: for each, how to load an item and build its
prompt, the JSON schema of the answer, how to write the answer, and how to take it back
when it cannot be charged. The generic activity (activities.text) does the rest.

`write` runs inside the transaction that records the call (igny8_ai_calls), so a result
is never written without its record, nor recorded without being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, select, update

from domain.ai_functions import GENERATE_IMAGE_PROMPTS, AIFunction
from domain.ai_schemas import GENERATE_IMAGE_PROMPTS_SCHEMA
from domain.prompts import Prompt, SiteContext, clip_alt_text, image_prompts_prompt
from models.db import utcnow
from models.pipeline import Content, Image
from models.sites import Sector, Site

CONTENT = Content.__table__
IMAGES = Image.__table__
SITES = Site.__table__
SECTORS = Sector.__table__


class ItemGone(Exception):
    """The item no longer exists for this account (deleted meanwhile)."""


@dataclass(frozen=True)
class TextItem:
    """One item of a text AI function: its id (a content id, a cluster id, a keyword
    batch's number) and, for an item made of others (a batch of keywords), their ids."""

    account_id: int
    item_id: int
    workflow_id: str
    members: tuple[int, ...] = ()


@dataclass(frozen=True)
class Call:
    """One call's prompt, as the provider gets it."""

    prompt: Prompt
    schema_name: str
    schema: dict[str, Any]
    max_output_tokens: int


class TextFunction(Protocol):
    fn: AIFunction
    estimate_prompt_chars: int  # for the quote before any prompt is built
    max_output_tokens: int

    def needing_work(self, conn: Connection, account_id: int, item_ids: list[int]) -> list[int]:
        """Of `item_ids` (the account's), those whose result is not written yet."""
        ...

    def site_of(self, conn: Connection, account_id: int, item_ids: list[int]) -> int | None:
        """The site the items belong to (its text model is the default)."""
        ...

    def load(self, conn: Connection, item: TextItem) -> Call:
        """The item's prompt; ItemGone if there is nothing left to do for it."""
        ...

    def write(self, conn: Connection, item: TextItem, data: dict[str, Any]) -> dict[str, Any]:
        """Write the answer (idempotently); return what the workflow may want (new ids)."""
        ...

    def withdraw(self, conn: Connection, item: TextItem) -> None:
        """Take back what `write` wrote: the item could not be charged."""
        ...


def site_context(conn: Connection, site_id: int, sector_id: int | None) -> SiteContext:
    site = conn.execute(select(SITES.c.name, SITES.c.url).where(SITES.c.id == site_id)).first()
    sector = None
    if sector_id is not None:
        sector = conn.execute(
            select(SECTORS.c.name).where(SECTORS.c.id == sector_id)
        ).scalar_one_or_none()
    return SiteContext(
        name=site.name if site else "", url=site.url if site else "", sector=sector or ""
    )


class ImagePrompts:
    """generate_image_prompts: an article → its featured and in-article image prompts with
    alt text, stored on the content (`image_prompts`) for the image batch to use."""

    fn = GENERATE_IMAGE_PROMPTS
    estimate_prompt_chars = 2500
    max_output_tokens = 1200

    def needing_work(self, conn: Connection, account_id: int, item_ids: list[int]) -> list[int]:
        rows = conn.execute(
            select(CONTENT.c.id, CONTENT.c.image_prompts).where(
                CONTENT.c.id.in_(item_ids), CONTENT.c.account_id == account_id
            )
        ).all()
        return sorted(r.id for r in rows if not r.image_prompts)

    def site_of(self, conn: Connection, account_id: int, item_ids: list[int]) -> int | None:
        return conn.execute(
            select(CONTENT.c.site_id)
            .where(CONTENT.c.id.in_(item_ids), CONTENT.c.account_id == account_id)
            .limit(1)
        ).scalar_one_or_none()

    def load(self, conn: Connection, item: TextItem) -> Call:
        row = conn.execute(
            select(CONTENT, SITES.c.max_in_article_images)
            .join(SITES, SITES.c.id == CONTENT.c.site_id)
            .where(CONTENT.c.id == item.item_id, CONTENT.c.account_id == item.account_id)
        ).first()
        if row is None:
            raise ItemGone(f"Content {item.item_id} does not exist")
        prompt = image_prompts_prompt(
            site_context(conn, row.site_id, row.sector_id),
            row.title,
            row.html,
            row.focus_keyword,
            list(row.target_keywords or []),
            int(row.max_in_article_images or 0),
        )
        return Call(prompt, self.fn.name, GENERATE_IMAGE_PROMPTS_SCHEMA, self.max_output_tokens)

    def write(self, conn: Connection, item: TextItem, data: dict[str, Any]) -> dict[str, Any]:
        item_id = item.item_id
        wanted = conn.execute(
            select(SITES.c.max_in_article_images)
            .join(CONTENT, CONTENT.c.site_id == SITES.c.id)
            .where(CONTENT.c.id == item_id)
        ).scalar_one()
        images = [{"type": "featured", **_image(data["featured"])}] + [
            {"type": "in_article", **_image(i)} for i in data["in_article"][: int(wanted or 0)]
        ]
        now = utcnow()
        conn.execute(
            update(CONTENT)
            .where(CONTENT.c.id == item_id)
            .values(image_prompts=images, updated_at=now)
        )
        for position, image in enumerate(images):  # planned images not made yet use them
            conn.execute(
                update(IMAGES)
                .where(
                    IMAGES.c.content_id == item_id,
                    IMAGES.c.position == position,
                    IMAGES.c.status != "generated",
                )
                .values(prompt=image["prompt"], alt_text=image["alt_text"], updated_at=now)
            )
        return {"images": len(images)}

    def withdraw(self, conn: Connection, item: TextItem) -> None:
        conn.execute(update(CONTENT).where(CONTENT.c.id == item.item_id).values(image_prompts=[]))


def _image(answer: dict[str, Any]) -> dict[str, str]:
    return {"prompt": answer["prompt"].strip(), "alt_text": clip_alt_text(answer["alt_text"])}


TEXT_FUNCTIONS: dict[str, TextFunction] = {f.fn.name: f for f in (ImagePrompts(),)}
