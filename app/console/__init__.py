"""The built-in console: one page at ``/`` that drives the public API from the browser.

Everything it needs ships in ``static/`` (no build step, no CDN). The page calls the same REST
and OpenAI routes as any client, with the key typed into it kept in the page's memory only.
"""
