"""E-mail (``.eml``): headers and body as the document; each attachment becomes a child document."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from indexers.documents import Attachment, LoadedDocument, LoaderError, Location, Section
from indexers.loaders.text import html_to_markdown, markdown_sections

_HEADERS = ("From", "To", "Cc", "Date", "Subject")


def load_eml(data: bytes, filename: str) -> LoadedDocument:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not any(msg.get(h) for h in _HEADERS):
        raise LoaderError("not an e-mail message (no From/To/Subject headers)")
    subject = str(msg.get("Subject") or "").strip() or None
    header_text = "\n".join(f"{h}: {msg.get(h)}" for h in _HEADERS if msg.get(h))
    doc = LoadedDocument(
        "message/rfc822",
        title=subject,
        extra_metadata={h.lower(): str(msg.get(h)) for h in ("From", "To", "Date") if msg.get(h)},
    )
    body_part = msg.get_body(preferencelist=("plain", "html"))
    body = ""
    if body_part is not None:
        content = body_part.get_content()
        if body_part.get_content_subtype() == "html":
            body, _ = html_to_markdown(content)
        else:
            body = content.strip()
    doc.sections.append(Section(header_text, Location(section="headers")))
    if body:
        sections, _ = (
            markdown_sections(body)
            if body_part and body_part.get_content_subtype() == "html"
            else ([Section(body)], None)
        )
        for s in sections:
            doc.sections.append(Section(s.text, Location(section=s.location.section or "body")))
    for part in msg.iter_attachments():
        name = part.get_filename() or f"attachment-{len(doc.attachments) + 1}"
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else part.get_content()
            payload = inner.as_bytes() if hasattr(inner, "as_bytes") else bytes(inner)
            if not name.lower().endswith(".eml"):
                name += ".eml"
        else:
            payload = part.get_payload(decode=True) or b""
        doc.attachments.append(Attachment(name, payload, part.get_content_type()))
    return doc
