"""Request schemas for the four text AI functions (strict structured-output style).

These are the schemas the activities send as `response_format.json_schema.schema`; the
simulator answers against the same constants (simulator.schemas re-exports them), so both
sides can never drift apart.
Strict mode rules: every object lists all properties as required and sets
additionalProperties false; no unsupported keywords.
"""

from __future__ import annotations

from typing import Any


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _strings(description: str) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": {"type": "string"}}


def _object(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


SEARCH_INTENTS = ("informational", "commercial", "transactional", "navigational")
CONTENT_TYPES = ("post", "page")
CONTENT_STRUCTURES = ("article", "guide", "how_to", "listicle", "comparison", "review", "faq")


def _enum(values: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "description": description}


AUTO_CLUSTER_SCHEMA: dict[str, Any] = _object(
    {
        "clusters": {
            "type": "array",
            "description": "Topic clusters; every input keyword appears in exactly one cluster",
            "items": _object(
                {
                    "name": _string("Short, human-readable topic name (2-5 words)"),
                    "intent": _enum(SEARCH_INTENTS, "The searchers' shared intent"),
                    "description": _string("One line on what these searchers want"),
                    "keywords": _strings("Input keywords, verbatim, that belong here"),
                }
            ),
        }
    }
)

GENERATE_IDEAS_SCHEMA: dict[str, Any] = _object(
    {
        "ideas": {
            "type": "array",
            "description": "Two or three distinct article ideas for the cluster",
            "items": _object(
                {
                    "title": _string("Working title of the article, under 70 characters"),
                    "description": _string(
                        "A short outline: one sentence on the angle and the reader, then "
                        "'Sections:' and the H2 headings, one per line"
                    ),
                    "content_type": _enum(CONTENT_TYPES, "Kind of page"),
                    "content_structure": _enum(CONTENT_STRUCTURES, "Shape of the piece"),
                    "target_keywords": _strings("Keywords from the cluster this idea targets"),
                }
            ),
        }
    }
)

GENERATE_CONTENT_SCHEMA: dict[str, Any] = _object(
    {
        "title": _string("Final article title (the given title, polished at most)"),
        "meta_title": _string("SEO title tag, at most 60 characters, focus keyword first"),
        "meta_description": _string(
            "Search snippet, at most 160 characters, containing the focus keyword"
        ),
        "slug": _string("URL slug: lowercase words joined by hyphens, no stop words"),
        "focus_keyword": _string("The focus keyword the article is optimised for"),
        "target_keywords": _strings("The target and secondary keywords the article uses"),
        "html": _string(
            "Article body as HTML: intro, h2/h3 sections, paragraphs, a list, FAQ or "
            "conclusion; no <html>, <body> or <h1>"
        ),
        "word_count": {"type": "integer", "description": "Words in the article text"},
    }
)

_IMAGE_PROMPT = _object(
    {
        "prompt": _string("What the image shows, its style and composition; no text in it"),
        "alt_text": _string("Alt text for the image: what it shows, under 125 characters"),
    }
)

GENERATE_IMAGE_PROMPTS_SCHEMA: dict[str, Any] = _object(
    {
        "featured": {**_IMAGE_PROMPT, "description": "The featured (hero) image"},
        "in_article": {
            "type": "array",
            "description": "Images placed inside the article, one per section, in order",
            "items": _IMAGE_PROMPT,
        },
    }
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "auto_cluster": AUTO_CLUSTER_SCHEMA,
    "generate_ideas": GENERATE_IDEAS_SCHEMA,
    "generate_content": GENERATE_CONTENT_SCHEMA,
    "generate_image_prompts": GENERATE_IMAGE_PROMPTS_SCHEMA,
}
