"""The AI functions (DESIGN §2): one row each, so the names that billing, logs and
notifications rely on are written once.

Every function does the same five steps (reserve, generate, deduct, task log, notify);
what differs is here: its `function_name` in the task log, its usage `operation_type`,
its notification types, the model type it needs, and the kind of item it works on, from
which each item's idempotency key is built: `<workflow id>:<item kind>:<item id>`, never
from attempt numbers or run ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["success", "failed", "paused", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("success", "failed", "paused", "cancelled")


@dataclass(frozen=True)
class AIFunction:
    name: str  # AITaskLog.function_name
    operation_type: str  # CreditUsageLog / CreditTransaction.operation_type
    notification_prefix: str  # ai_image → ai_image_success, ai_image_failed, ...
    model_type: Literal["text", "image"]
    item_kind: str  # what one charge is for: "image", "content", ...
    items_label: str  # "images", "articles": how messages count the items
    done_title: str  # the success notification's title
    done_phrase: str  # "Generated {n} images": what a success message says was made
    run_label: str  # "Image batch": what a stand-alone run of it is called
    failed_title: str  # the failure notification's title

    def item_key(self, workflow_id: str, item_id: int) -> str:
        """The idempotency key of one item's charge (and of its AI call record)."""
        return f"{workflow_id}:{self.item_kind}:{item_id}"

    def notification_type(self, outcome: Outcome) -> str:
        return f"{self.notification_prefix}_{outcome}"


AUTO_CLUSTER = AIFunction(
    "auto_cluster", "clustering", "ai_cluster", "text", "keyword-batch", "keyword batches",
    "Keywords clustered", "Clustered {n} keyword batches", "Clustering",
    "Keyword clustering failed",
)  # fmt: skip
GENERATE_IDEAS = AIFunction(
    "generate_ideas", "idea_generation", "ai_ideas", "text", "cluster", "clusters",
    "Ideas generated", "Generated ideas for {n} clusters", "Idea generation",
    "Idea generation failed",
)  # fmt: skip
GENERATE_CONTENT = AIFunction(
    "generate_content", "content_generation", "ai_content", "text", "task", "articles",
    "Articles written", "Wrote {n} articles", "Content generation",
    "Content generation failed",
)  # fmt: skip
GENERATE_IMAGE_PROMPTS = AIFunction(
    "generate_image_prompts", "image_prompt_extraction", "ai_image_prompts", "text", "content",
    "articles", "Image prompts written", "Wrote image prompts for {n} articles",
    "Image prompt batch", "Image prompt writing failed",
)  # fmt: skip
GENERATE_IMAGES = AIFunction(
    "generate_images", "image_generation", "ai_image", "image", "image", "images",
    "Images generated", "Generated {n} images", "Image batch", "Image generation failed",
)  # fmt: skip

AI_FUNCTIONS: dict[str, AIFunction] = {
    fn.name: fn
    for fn in (
        AUTO_CLUSTER,
        GENERATE_IDEAS,
        GENERATE_CONTENT,
        GENERATE_IMAGE_PROMPTS,
        GENERATE_IMAGES,
    )
}


class UnknownAIFunction(ValueError):
    pass


def ai_function(name: str) -> AIFunction:
    """The function called `name`, or a clear error listing the known ones."""
    try:
        return AI_FUNCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(AI_FUNCTIONS))
        raise UnknownAIFunction(f"Unknown AI function {name!r}; known: {known}") from None


def notification_types() -> list[str]:
    """Every AI notification type (success, failed, paused, cancelled of each function)."""
    return [fn.notification_type(o) for fn in AI_FUNCTIONS.values() for o in OUTCOMES]
