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


AUTO_CLUSTER_SCHEMA: dict[str, Any] = _object(
    {
        "clusters": {
            "type": "array",
            "description": "Topic clusters; every input keyword appears in exactly one cluster",
            "items": _object(
                {
                    "name": _string("Short, human-readable topic name"),
                    "description": _string("One or two sentences on the searcher's intent"),
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
                    "title": _string("Working title of the article"),
                    "description": _string("What the article covers and for whom"),
                    "content_type": _string("Kind of page, e.g. 'post'"),
                    "content_structure": _string("Shape of the piece, e.g. 'article'"),
                    "target_keywords": _strings("Keywords from the cluster this idea targets"),
                }
            ),
        }
    }
)

GENERATE_CONTENT_SCHEMA: dict[str, Any] = _object(
    {
        "title": _string("Final article title"),
        "meta_description": _string("Search snippet, at most about 155 characters"),
        "html": _string("Article body as HTML: h2 sections, paragraphs, lists; no <html>/<body>"),
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
