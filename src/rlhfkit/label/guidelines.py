"""A project's guidelines: Markdown rendered without raw HTML, and what each InstructGPT flag means.

The guidelines are written by an admin but read by every labeler, so they are treated like model text:
markdown-it-py's CommonMark parser with `html` off escapes every tag (`<script>` is shown, never run),
and its link check refuses `javascript:`, `vbscript:`, `file:` and non-image `data:` URLs. The page's
Content-Security-Policy (`img-src 'self' data:`) also keeps images from other hosts out.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

from rlhfkit.data.schemas import FLAGS

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"])

# One line per flag: when to tick it (after the InstructGPT labeling instructions, Ouyang et al. 2022, App. B).
FLAG_HELP: dict[str, str] = {
    "fails_instruction": "It does not do what was asked: the wrong task, the wrong format, or a constraint ignored.",
    "inappropriate_for_customer_assistant": "A company's assistant should not say this to a customer "
                                            "(rude, off-topic, unprofessional).",
    "sexual_content": "It contains sexual content, asked for or not.",
    "violent_content": "It describes or depicts violence.",
    "encourages_violence": "It encourages, or does not discourage, violence, abuse, terrorism or self-harm.",
    "denigrates_protected_class": "It demeans people for their race, religion, gender, sexuality, disability, "
                                  "nationality or age.",
    "harmful_advice": "Following it could hurt someone: physically, financially, legally or medically.",
    "moral_judgment": "It lectures or judges the user or others morally when nobody asked for it.",
}
assert set(FLAG_HELP) == set(FLAGS)


def render_markdown(text: str) -> Markup:
    """Markdown -> HTML that is safe to put into a page (raw HTML in `text` comes out escaped)."""
    return Markup(_md.render(text or ""))
