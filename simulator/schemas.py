"""The simulator answers against the same schemas the activities send (domain.ai_schemas),
so the two sides can never drift apart."""

from domain.ai_schemas import (
    AUTO_CLUSTER_SCHEMA,
    GENERATE_CONTENT_SCHEMA,
    GENERATE_IDEAS_SCHEMA,
    GENERATE_IMAGE_PROMPTS_SCHEMA,
    SCHEMAS,
)

__all__ = [
    "AUTO_CLUSTER_SCHEMA",
    "GENERATE_CONTENT_SCHEMA",
    "GENERATE_IDEAS_SCHEMA",
    "GENERATE_IMAGE_PROMPTS_SCHEMA",
    "SCHEMAS",
]
