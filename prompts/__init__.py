"""Prompt assembly: chat rendering to token ids (and, later, templates, few-shot and budgets).

A library: it never imports ``app``.
"""

from prompts.chat import RenderedPrompt, render_chat

__all__ = ["RenderedPrompt", "render_chat"]
