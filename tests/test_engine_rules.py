"""The engine's plain rules, without a workflow: run status transitions, the AI function
table and the prompts."""

from __future__ import annotations

import pytest

from domain.ai_functions import AI_FUNCTIONS, UnknownAIFunction, ai_function, notification_types
from domain.prompts import SiteContext, clip_alt_text, headings, image_prompts_prompt
from simulator.prompts import parse_sections
from workflows.engine.control import ControlState, RunControl


def test_pause_resume_and_cancel_follow_the_status_rules():
    control = RunControl(ControlState())
    assert control.status == "running" and control.claiming
    assert control.pause("user") and control.status == "paused"
    assert control.pause_reason == "user" and not control.claiming
    assert not control.pause("insufficient_credits")  # already paused: reason kept
    assert control.pause_reason == "user"
    control.resume()
    assert control.status == "running" and control.pause_reason is None
    assert control.pause("insufficient_credits") and control.state.pauses == 2
    control.cancel()
    assert control.status == "cancelling" and not control.state.paused
    assert not control.pause("user")  # a cancelling run never pauses again
    control.decide("cancelled")
    assert control.status == "cancelling" and control.decided == "cancelled"
    control.finished()  # the final status shows only once finishing is done
    assert control.status == "cancelled" and control.pause_reason is None


def test_the_workers_are_told_only_when_stopping_changes():
    control = RunControl(ControlState())
    assert not control.stop_out_of_step
    control.pause("user")
    assert control.stop_out_of_step
    control.state.stop_published = True
    control.resume()
    assert control.stop_out_of_step


def test_every_function_has_its_names_and_keys():
    assert set(AI_FUNCTIONS) == {
        "auto_cluster",
        "generate_ideas",
        "generate_content",
        "generate_image_prompts",
        "generate_images",
    }
    images = ai_function("generate_images")
    assert images.operation_type == "image_generation"
    assert images.item_key("image-batch-1-abc", 42) == "image-batch-1-abc:image:42"
    assert images.notification_type("success") == "ai_image_success"
    assert ai_function("generate_image_prompts").notification_type("failed") == (
        "ai_image_prompts_failed"
    )
    kinds = notification_types()
    assert len(kinds) == len(set(kinds)) == 4 * len(AI_FUNCTIONS)
    with pytest.raises(UnknownAIFunction, match="known: auto_cluster"):
        ai_function("make_coffee")


def test_the_image_prompts_prompt_carries_the_article_and_its_sections():
    html = "<h2>Grind size</h2><p>x</p><h2>Water <em>temperature</em></h2>"
    prompt = image_prompts_prompt(
        SiteContext("Brew Lab", "https://brew.example", "Coffee"),
        "Cold Brew at Home",
        html,
        "cold brew",
        ["cold brew", "cold brew ratio"],
        2,
    )
    sections = parse_sections(prompt.user)
    assert sections["TITLE"] == ["Cold Brew at Home"]
    assert sections["FOCUS_KEYWORD"] == ["cold brew"] and sections["MAX_IN_ARTICLE"] == ["2"]
    assert headings(prompt.user) == ["Grind size", "Water temperature"]
    assert "no text" in prompt.system and "125" in prompt.system


def test_alt_text_is_clipped_on_a_word_boundary():
    long = "A barista pours " + "cold brew coffee over ice " * 10
    clipped = clip_alt_text(long)
    assert len(clipped) <= 125 and clipped.endswith("…") and " cold brew" in clipped
    assert clip_alt_text("  short   alt ") == "short alt"
