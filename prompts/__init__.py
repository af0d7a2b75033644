"""Prompt assembly: safe templates, chat rendering to token ids, RAG layout, the context budget,
and the metrics used to choose templates. A library: it never imports ``app``.
"""

from prompts.chat import RenderedPrompt, render_chat

__all__ = ["RenderedPrompt", "render_chat"]
