"""What differs between the text AI functions: for each, how to load an item and build its
prompt, the JSON schema of the answer, how to write the answer, and how to take it back
when it cannot be charged. The generic activity (activities.text) does the rest.

`write` runs inside the transaction that records the call (igny8_ai_calls), so a result
is never written without its record, nor recorded without being written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    Table,
    cast,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from domain.ai_functions import (
    AUTO_CLUSTER,
    GENERATE_CONTENT,
    GENERATE_IDEAS,
    GENERATE_IMAGE_PROMPTS,
    AIFunction,
)
from domain.ai_schemas import (
    AUTO_CLUSTER_SCHEMA,
    CONTENT_STRUCTURES,
    CONTENT_TYPES,
    GENERATE_CONTENT_SCHEMA,
    GENERATE_IDEAS_SCHEMA,
    GENERATE_IMAGE_PROMPTS_SCHEMA,
)
from domain.prompts import (
    EXISTING_TITLES_MAX,
    ArticleBrief,
    Prompt,
    SiteContext,
    clip_alt_text,
    cluster_prompt,
    content_prompt,
    ideas_prompt,
    image_prompts_prompt,
    text_of,
)
from domain.titles import (
    META_DESCRIPTION_MAX,
    META_TITLE_MAX,
    clip_words,
    fold,
    normalise_title,
    slugify,
    unique_slug,
)
from models.db import utcnow
from models.pipeline import Cluster, Content, ContentIdea, Image, Keyword, Task
from models.sites import Sector, Site

CONTENT = Content.__table__
IMAGES = Image.__table__
SITES = Site.__table__
SECTORS = Sector.__table__
KEYWORDS = Keyword.__table__
CLUSTERS = Cluster.__table__
IDEAS = ContentIdea.__table__
TASKS = Task.__table__

# PostgreSQL advisory-lock namespaces (first key; the site id is the second): writers that
# check-then-insert per site (title dedup, slug uniqueness) take turns. SQLite needs none:
# every write transaction there is BEGIN IMMEDIATE, one at a time.
LOCK_SITE_IDEAS = 8101
LOCK_SITE_SLUGS = 8102
SECONDARY_KEYWORDS_MAX = 8


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


# --------------------------------------------------------------------------- helpers


def _insert_ignoring_duplicate(
    conn: Connection, table: Table, values: dict[str, Any]
) -> int | None:
    """Insert unless a unique key (a `source_key`, a task id) is taken: the new row's id,
    or None. A write retried after a crash, or raced by its twin, never makes a second
    row. (RETURNING, not rowcount: psycopg reports -1 for an implicit-RETURNING insert.)"""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing()
    return conn.execute(stmt.returning(table.c.id)).scalar_one_or_none()


def _lock_site(conn: Connection, namespace: int, site_id: int) -> None:
    """Until commit, be the only writer checking this site's titles or slugs (PostgreSQL;
    SQLite's write transactions are already serial)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            select(
                func.pg_advisory_xact_lock(
                    cast(literal(namespace), Integer), cast(literal(site_id), Integer)
                )
            )
        )


def _keyword_key(text: str) -> str:
    """How an answer's keyword is matched to ours: case and spacing do not matter."""
    return " ".join(text.strip().removeprefix("- ").lower().split())


def _dedup(keywords: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for keyword in keywords:
        keyword = " ".join((keyword or "").split())[:255]
        if keyword and _keyword_key(keyword) not in seen:
            seen.add(_keyword_key(keyword))
            out.append(keyword)
    return out


def _cluster_keywords(conn: Connection, cluster_id: int | None) -> list[str]:
    """The cluster's keywords, the most searched first (what a brief leads with)."""
    if cluster_id is None:
        return []
    return list(
        conn.execute(
            select(KEYWORDS.c.keyword)
            .where(KEYWORDS.c.cluster_id == cluster_id)
            .order_by(KEYWORDS.c.volume.desc(), KEYWORDS.c.id)
        ).scalars()
    )


def _site_titles(conn: Connection, site_id: int) -> list[tuple[int, str]]:
    """Every idea and article title of the site, with its row id (newer rows, higher)."""
    ideas = conn.execute(select(IDEAS.c.id, IDEAS.c.title).where(IDEAS.c.site_id == site_id)).all()
    articles = conn.execute(
        select(CONTENT.c.id, CONTENT.c.title).where(CONTENT.c.site_id == site_id)
    ).all()
    return [(r.id, r.title) for r in (*ideas, *articles)]


def relevant_titles(titles: list[tuple[int, str]], topic: list[str], limit: int) -> list[str]:
    """The `limit` titles a model most needs to see to avoid repeating one: those sharing
    the most words with the topic (cluster name and keywords), then the newest."""
    words = {w for text in topic for w in fold(text).split() if len(w) > 2}

    def rank(entry: tuple[int, str]) -> tuple[int, int]:
        shared = len(words & set(fold(entry[1]).split()))
        return (-shared, -entry[0])

    unique = {normalise_title(t): (i, t) for i, t in titles}
    return [t for _, t in sorted(unique.values(), key=rank)[:limit]]


# --------------------------------------------------------------------------- auto_cluster


def unclustered_keywords(conn: Connection, site_id: int, limit: int | None = None) -> list[int]:
    """The site's keywords with no cluster yet, oldest first: what clustering batches."""
    stmt = (
        select(KEYWORDS.c.id)
        .where(KEYWORDS.c.site_id == site_id, KEYWORDS.c.cluster_id.is_(None))
        .order_by(KEYWORDS.c.id)
        .limit(limit)
    )
    return list(conn.execute(stmt).scalars())


class AutoCluster:
    """auto_cluster: a batch of keywords → clusters by search intent and topic.

    The item is a keyword batch of a run: `item_id` its number in the run, `members` its
    keyword ids. A member clustered meanwhile (another run) is left alone; a batch with
    none left is gone (no call, no charge)."""

    fn = AUTO_CLUSTER
    estimate_prompt_chars = 3000  # the instructions and about 20 keywords
    max_output_tokens = 3000

    def needing_work(self, conn: Connection, account_id: int, item_ids: list[int]) -> list[int]:
        """Batch numbers name no row: what is left of each batch is decided at load."""
        return list(item_ids)

    def site_of(self, conn: Connection, account_id: int, item_ids: list[int]) -> int | None:
        return None  # batch numbers name no row: the run passes its site

    def load(self, conn: Connection, item: TextItem) -> Call:
        rows = self._unclustered(conn, item)
        prompt = cluster_prompt(
            site_context(conn, rows[0].site_id, rows[0].sector_id), [r.keyword for r in rows]
        )
        return Call(prompt, self.fn.name, AUTO_CLUSTER_SCHEMA, self.max_output_tokens)

    def write(self, conn: Connection, item: TextItem, data: dict[str, Any]) -> dict[str, Any]:
        rows = self._unclustered(conn, item)
        ids_by_keyword = {_keyword_key(r.keyword): r.id for r in rows}
        claimed: set[int] = set()
        cluster_ids = []
        for n, answer in enumerate(data["clusters"]):
            members = []
            for keyword in answer["keywords"]:
                keyword_id = ids_by_keyword.get(_keyword_key(keyword))
                if keyword_id is not None and keyword_id not in claimed:
                    claimed.add(keyword_id)
                    members.append(keyword_id)
            key = f"{item.workflow_id}:kb:{item.item_id}:{n}"
            cluster_id = self._cluster(conn, item, key, rows[0], answer, members)
            if cluster_id is not None:
                cluster_ids.append(cluster_id)
        return {"cluster_ids": cluster_ids}

    def withdraw(self, conn: Connection, item: TextItem) -> None:
        prefix = f"{item.workflow_id}:kb:{item.item_id}:"
        ids = select(CLUSTERS.c.id).where(CLUSTERS.c.source_key.startswith(prefix, autoescape=True))
        conn.execute(
            update(KEYWORDS)
            .where(KEYWORDS.c.cluster_id.in_(ids))
            .values(cluster_id=None, status="new")
        )
        conn.execute(
            delete(CLUSTERS).where(CLUSTERS.c.source_key.startswith(prefix, autoescape=True))
        )

    def _unclustered(self, conn: Connection, item: TextItem) -> list[Row[Any]]:
        """The batch's keywords still without a cluster, all of the first one's site."""
        rows = conn.execute(
            select(KEYWORDS.c.id, KEYWORDS.c.keyword, KEYWORDS.c.site_id, KEYWORDS.c.sector_id)
            .where(
                KEYWORDS.c.id.in_(item.members),
                KEYWORDS.c.account_id == item.account_id,
                KEYWORDS.c.cluster_id.is_(None),
            )
            .order_by(KEYWORDS.c.id)
        ).all()
        if not rows:
            raise ItemGone(f"Keyword batch {item.item_id} has no unclustered keywords left")
        return [r for r in rows if r.site_id == rows[0].site_id]

    def _cluster(
        self,
        conn: Connection,
        item: TextItem,
        key: str,
        first: Row[Any],
        answer: dict[str, Any],
        members: list[int],
    ) -> int | None:
        """The cluster of one answer entry (made once per key) with its members that are
        still unclustered; None when it holds none of ours."""
        cluster_id = conn.execute(
            select(CLUSTERS.c.id).where(CLUSTERS.c.source_key == key)
        ).scalar_one_or_none()
        inserted = False
        if cluster_id is None:
            if not members:
                return None
            new_id = _insert_ignoring_duplicate(
                conn, CLUSTERS, _cluster_row(item, key, first, answer)
            )
            inserted = new_id is not None
            cluster_id = (
                new_id
                or conn.execute(
                    select(CLUSTERS.c.id).where(CLUSTERS.c.source_key == key)
                ).scalar_one()
            )
        if members:
            conn.execute(
                update(KEYWORDS)
                .where(KEYWORDS.c.id.in_(members), KEYWORDS.c.cluster_id.is_(None))
                .values(cluster_id=cluster_id, status="clustered")
            )
        count = conn.execute(
            select(func.count()).where(KEYWORDS.c.cluster_id == cluster_id)
        ).scalar_one()
        if count == 0:
            if inserted:  # its keywords were all taken meanwhile: no empty cluster
                conn.execute(delete(CLUSTERS).where(CLUSTERS.c.id == cluster_id))
            return None
        conn.execute(
            update(CLUSTERS).where(CLUSTERS.c.id == cluster_id).values(keywords_count=count)
        )
        return cluster_id


def _cluster_row(
    item: TextItem, key: str, first: Row[Any], answer: dict[str, Any]
) -> dict[str, Any]:
    return {
        "account_id": item.account_id,
        "site_id": first.site_id,
        "sector_id": first.sector_id,
        "name": clip_words(answer["name"], 255) or "Untitled cluster",
        "description": _cluster_description(answer),
        "keywords_count": 0,
        "status": "new",
        "source_key": key,
        "created_at": utcnow(),
    }


def _cluster_description(answer: dict[str, Any]) -> str:
    """The answer's one line, led by its intent unless it already names it."""
    description = " ".join(answer["description"].split())
    intent = answer.get("intent") or ""
    if intent and intent not in description.lower():
        return f"{intent.capitalize()} intent: {description}".strip()
    return description


# --------------------------------------------------------------------------- generate_ideas


class GenerateIdeas:
    """generate_ideas: a cluster → 2-3 article ideas, none on a title the site already has
    (normalised: domain.titles); the cluster is then `ideas_generated`."""

    fn = GENERATE_IDEAS
    estimate_prompt_chars = 5500  # instructions, keywords, up to 50 existing titles
    max_output_tokens = 1500

    def needing_work(self, conn: Connection, account_id: int, item_ids: list[int]) -> list[int]:
        rows = conn.execute(
            select(CLUSTERS.c.id).where(
                CLUSTERS.c.id.in_(item_ids),
                CLUSTERS.c.account_id == account_id,
                CLUSTERS.c.status != "ideas_generated",
            )
        ).scalars()
        return sorted(rows)

    def site_of(self, conn: Connection, account_id: int, item_ids: list[int]) -> int | None:
        return conn.execute(
            select(CLUSTERS.c.site_id)
            .where(CLUSTERS.c.id.in_(item_ids), CLUSTERS.c.account_id == account_id)
            .limit(1)
        ).scalar_one_or_none()

    def load(self, conn: Connection, item: TextItem) -> Call:
        cluster = self._cluster(conn, item)
        keywords = _cluster_keywords(conn, cluster.id) or [cluster.name]
        existing = relevant_titles(
            _site_titles(conn, cluster.site_id), [cluster.name, *keywords], EXISTING_TITLES_MAX
        )
        prompt = ideas_prompt(
            site_context(conn, cluster.site_id, cluster.sector_id),
            cluster.name,
            cluster.description,
            keywords,
            existing,
        )
        return Call(prompt, self.fn.name, GENERATE_IDEAS_SCHEMA, self.max_output_tokens)

    def write(self, conn: Connection, item: TextItem, data: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(conn, item)
        _lock_site(conn, LOCK_SITE_IDEAS, cluster.site_id)
        taken = {normalise_title(t) for _, t in _site_titles(conn, cluster.site_id)}
        keywords = _cluster_keywords(conn, cluster.id) or [cluster.name]
        idea_ids = []
        for n, idea in enumerate(data["ideas"]):
            key = f"{item.workflow_id}:cluster:{item.item_id}:{n}"
            idea_id = conn.execute(
                select(IDEAS.c.id).where(IDEAS.c.source_key == key)
            ).scalar_one_or_none()
            title = clip_words(idea["title"], 500)
            normalised = normalise_title(title)
            if idea_id is None:
                if not normalised or normalised in taken:
                    continue  # the site has this article already (or the answer twice)
                idea_id = self._insert(conn, item, cluster, key, idea, title, keywords)
            taken.add(normalised)
            idea_ids.append(idea_id)
        conn.execute(
            update(CLUSTERS).where(CLUSTERS.c.id == cluster.id).values(status="ideas_generated")
        )
        return {"idea_ids": idea_ids}

    def withdraw(self, conn: Connection, item: TextItem) -> None:
        prefix = f"{item.workflow_id}:cluster:{item.item_id}:"
        conn.execute(delete(IDEAS).where(IDEAS.c.source_key.startswith(prefix, autoescape=True)))
        conn.execute(
            update(CLUSTERS)
            .where(CLUSTERS.c.id == item.item_id, CLUSTERS.c.status == "ideas_generated")
            .values(status="new")
        )

    def _cluster(self, conn: Connection, item: TextItem) -> Row[Any]:
        cluster = conn.execute(
            select(CLUSTERS).where(
                CLUSTERS.c.id == item.item_id, CLUSTERS.c.account_id == item.account_id
            )
        ).first()
        if cluster is None:
            raise ItemGone(f"Cluster {item.item_id} does not exist")
        if cluster.status == "ideas_generated":
            raise ItemGone(f"Cluster {item.item_id} already has its ideas")
        return cluster

    def _insert(
        self,
        conn: Connection,
        item: TextItem,
        cluster: Row[Any],
        key: str,
        idea: dict[str, Any],
        title: str,
        keywords: list[str],
    ) -> int:
        ours = {_keyword_key(k): k for k in keywords}
        targets = _dedup(ours[k] for k in map(_keyword_key, idea["target_keywords"]) if k in ours)
        new_id = _insert_ignoring_duplicate(
            conn,
            IDEAS,
            {
                "account_id": item.account_id,
                "site_id": cluster.site_id,
                "sector_id": cluster.sector_id,
                "cluster_id": cluster.id,
                "title": title,
                "description": idea["description"].strip(),
                "content_type": _one_of(idea["content_type"], CONTENT_TYPES),
                "content_structure": _one_of(idea["content_structure"], CONTENT_STRUCTURES),
                "target_keywords": targets or keywords[:1],
                "status": "new",
                "source_key": key,
                "created_at": utcnow(),
            },
        )
        return (
            new_id or conn.execute(select(IDEAS.c.id).where(IDEAS.c.source_key == key)).scalar_one()
        )


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    value = (value or "").strip().lower()
    return value if value in allowed else allowed[0]


# --------------------------------------------------------------------------- generate_content


class GenerateContent:
    """generate_content: a writer task → one draft article with its SEO fields, the limits
    enforced on our side (meta lengths, a slug unique in the site, the real word count)."""

    fn = GENERATE_CONTENT
    estimate_prompt_chars = 5000  # the brief: instructions, keywords, the idea's outline
    max_output_tokens = 6000  # 1,400 words of HTML in JSON is about 3,000 tokens

    def needing_work(self, conn: Connection, account_id: int, item_ids: list[int]) -> list[int]:
        has_content = exists().where(CONTENT.c.task_id == TASKS.c.id)
        rows = conn.execute(
            select(TASKS.c.id).where(
                TASKS.c.id.in_(item_ids), TASKS.c.account_id == account_id, ~has_content
            )
        ).scalars()
        return sorted(rows)

    def site_of(self, conn: Connection, account_id: int, item_ids: list[int]) -> int | None:
        return conn.execute(
            select(TASKS.c.site_id)
            .where(TASKS.c.id.in_(item_ids), TASKS.c.account_id == account_id)
            .limit(1)
        ).scalar_one_or_none()

    def load(self, conn: Connection, item: TextItem) -> Call:
        task = self._task(conn, item)
        prompt = content_prompt(
            site_context(conn, task.site_id, task.sector_id), article_brief(conn, task)
        )
        return Call(prompt, self.fn.name, GENERATE_CONTENT_SCHEMA, self.max_output_tokens)

    def write(self, conn: Connection, item: TextItem, data: dict[str, Any]) -> dict[str, Any]:
        task = self._task(conn, item)
        _lock_site(conn, LOCK_SITE_SLUGS, task.site_id)
        wanted = article_brief(conn, task)
        html = data["html"].strip()
        title = _final_title(data["title"], task.title)
        focus = " ".join(data["focus_keyword"].split())[:255] or wanted.focus_keyword
        now = utcnow()
        values = {
            "account_id": item.account_id,
            "site_id": task.site_id,
            "sector_id": task.sector_id,
            "task_id": task.id,
            "title": title,
            "meta_title": clip_words(data["meta_title"] or title, META_TITLE_MAX),
            "meta_description": clip_words(
                data["meta_description"] or text_of(html), META_DESCRIPTION_MAX
            ),
            "slug": self._slug(conn, task.site_id, data["slug"], focus, title),
            "focus_keyword": focus,
            "target_keywords": _targets(wanted, data["target_keywords"]),
            "image_prompts": [],
            "html": html,
            "word_count": len(text_of(html).split()),
            "status": "draft",
            "site_status": "not_published",
            "created_at": now,
            "updated_at": now,
        }
        content_id = _insert_ignoring_duplicate(conn, CONTENT, values)
        if content_id is None:
            raise ItemGone(f"Task {task.id} already has content")
        conn.execute(update(TASKS).where(TASKS.c.id == task.id).values(status="done"))
        return {"content_id": content_id}

    def withdraw(self, conn: Connection, item: TextItem) -> None:
        conn.execute(delete(CONTENT).where(CONTENT.c.task_id == item.item_id))
        conn.execute(update(TASKS).where(TASKS.c.id == item.item_id).values(status="queued"))

    def _task(self, conn: Connection, item: TextItem) -> Row[Any]:
        task = conn.execute(
            select(TASKS).where(TASKS.c.id == item.item_id, TASKS.c.account_id == item.account_id)
        ).first()
        if task is None:
            raise ItemGone(f"Task {item.item_id} does not exist")
        if conn.execute(select(exists().where(CONTENT.c.task_id == task.id))).scalar():
            raise ItemGone(f"Task {item.item_id} already has content")
        return task

    def _slug(self, conn: Connection, site_id: int, answer: str, focus: str, title: str) -> str:
        """The answer's slug, else the focus keyword's, else the title's: made unique in
        the site by -2, -3... (two articles on one keyword must not share a URL)."""
        answer = answer.strip().rstrip("/").rsplit("/", 1)[-1]  # a path or URL: its end
        base = slugify(answer) or slugify(focus) or slugify(title) or "article"
        taken = set(
            conn.execute(
                select(CONTENT.c.slug).where(
                    CONTENT.c.site_id == site_id, CONTENT.c.slug.startswith(base, autoescape=True)
                )
            ).scalars()
        )
        return unique_slug(base, taken)


def article_brief(conn: Connection, task: Row[Any]) -> ArticleBrief:
    """The writing brief of a task: its title and keywords (the first is the focus), its
    idea's outline and shape, and the cluster's other keywords as secondary ones."""
    idea = None
    if task.idea_id is not None:
        idea = conn.execute(select(IDEAS).where(IDEAS.c.id == task.idea_id)).first()
    cluster_id = task.cluster_id if task.cluster_id is not None else idea and idea.cluster_id
    cluster_keywords = _cluster_keywords(conn, cluster_id)
    idea_keywords = list(idea.target_keywords or []) if idea else []
    targets = _dedup([*(task.keywords or []), *idea_keywords])
    focus = targets[0] if targets else (cluster_keywords[:1] or [task.title])[0]
    chosen = {_keyword_key(k) for k in targets}
    secondary = [k for k in cluster_keywords if _keyword_key(k) not in chosen]
    return ArticleBrief(
        title=task.title,
        focus_keyword=focus,
        target_keywords=targets or [focus],
        secondary_keywords=secondary[:SECONDARY_KEYWORDS_MAX],
        outline=idea.description if idea else "",
        content_structure=idea.content_structure if idea else "article",
    )


def _targets(wanted: ArticleBrief, answered: list[str]) -> list[str]:
    """The brief's target keywords, then the secondary ones the answer says it used (a
    keyword the brief never gave is not one the article was planned for)."""
    secondary = {_keyword_key(k): k for k in wanted.secondary_keywords}
    used = [secondary[_keyword_key(k)] for k in answered if _keyword_key(k) in secondary]
    return _dedup([*wanted.target_keywords, *used])


def _final_title(answer: str, planned: str) -> str:
    """The planned title (the one checked against the site's titles), in the answer's
    polish only when it is the same title."""
    answer = " ".join(answer.split())
    return answer[:500] if normalise_title(answer) == normalise_title(planned) else planned


TEXT_FUNCTIONS: dict[str, TextFunction] = {
    f.fn.name: f for f in (AutoCluster(), GenerateIdeas(), GenerateContent(), ImagePrompts())
}
