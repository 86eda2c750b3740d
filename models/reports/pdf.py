"""PDF reports: one small builder over ReportLab's platypus that every CreditTwin report uses.

The privacy certificate, the validation report and the stress-test report are
built from the same few blocks: headings, paragraphs, bullet lists, tables,
key/value lists, images (matplotlib PNGs) and sign-off lines. Everything that reaches the page
as text goes through `escape` first, because ReportLab's `Paragraph` reads a
mini markup language: a tenant name, a column name or a category value taken
from an upload such as ``<font color=red>`` or ``]]>`` must print as those
characters, never as markup (ReportLab markup injection). Callers therefore
pass plain text; only this module writes markup, and only its own.

Table columns are sized from their content, the way a browser lays out an
HTML table: every column is at least as wide as its longest word (so a header
such as "metric" never breaks inside a word), the rest of the page width goes
to the columns with the most text, and only a word of more than 30 characters
(a SHA-256, a run id) may be split. Cells wrap at spaces.

Documents are built with ReportLab's ``invariant`` mode so the same content
gives the same bytes (no creation time or random document id inside), which
keeps hashes of a report reproducible. Text is extractable (pypdf), which the
tests use to check that a report's figures equal its JSON twin's.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence
from xml.sax.saxutils import escape as _xml_escape

PAGE_MARGIN_CM = 1.8
# Table cell padding (ReportLab's default, left plus right) and cell font sizes.
CELL_PADDING_PT = 12.0
CELL_FONT_SIZE = 8.0
# A word wider than this share of the page may be split instead of widening its column.
LONG_WORD_SHARE = 1 / 3
# Words longer than this (hashes, run ids, signatures) may be split; shorter ones (column names) never are.
SPLITTABLE_CHARACTERS = 30
_TEXT_WIDTH_CM = 21.0 - 2 * PAGE_MARGIN_CM  # A4
# ReportLab's built-in fonts only: nothing to install, nothing to download.
BODY_FONT = "Helvetica"
BOLD_FONT = "Helvetica-Bold"
MONO_FONT = "Courier"


def escape(value: Any) -> str:
    """`value` as text safe inside a ReportLab Paragraph (``&``, ``<``, ``>`` and quotes escaped).

    Characters ReportLab's core fonts cannot draw (outside Latin-1, control
    characters) are replaced by ``?`` so a hostile name cannot break the layout.
    """
    text = fmt(value) if not isinstance(value, str) else value
    cleaned = "".join(ch if (ch >= " " or ch in "\t") and ord(ch) < 256 else "?" for ch in text.replace("\n", " "))
    return _xml_escape(cleaned, {'"': "&quot;", "'": "&#39;"})


def fmt(value: Any, digits: int = 4) -> str:
    """A figure as a reviewer reads it: floats to `digits` significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return fmt(value.item(), digits)
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    return str(value)


@dataclass
class PdfReport:
    """A report assembled block by block, then rendered with `build`.

    Example::

        report = PdfReport("Validation report", subtitle=f"tenant {tenant}")
        report.heading("Fidelity")
        report.table(["column", "KS"], [["income", 0.031]])
        pdf_bytes = report.build()
    """

    title: str
    subtitle: str | None = None
    author: str = "CreditTwin"
    footer: str | None = None
    # Tables and headings as reports laid them out before automatic column widths (equal columns, cells broken
    # at any character, key/value labels 5.5 cm of 17): only to re-render the earlier certificate layout page for
    # page, so that a certificate issued then still verifies (`models.reports.certificate_pdf`).
    legacy_tables: bool = False
    _blocks: list[tuple[str, tuple, dict]] = field(default_factory=list)

    def heading(self, text: str, level: int = 1) -> "PdfReport":
        self._blocks.append(("heading", (text, level), {}))
        return self

    def paragraph(self, text: str, *, style: str = "body") -> "PdfReport":
        """Plain text (escaped); `style` is "body", "small" or "mono"."""
        self._blocks.append(("paragraph", (text, style), {}))
        return self

    def bullets(self, items: Iterable[str]) -> "PdfReport":
        self._blocks.append(("bullets", (list(items),), {}))
        return self

    def table(
        self,
        header: Sequence[Any] | None,
        rows: Iterable[Sequence[Any]],
        *,
        widths_cm: Sequence[float] | None = None,
        highlight: Sequence[bool | None] | None = None,
    ) -> "PdfReport":
        """A table (`header` None: no header row); `highlight[i]` True shades row i green (pass), False red (fail), None leaves it."""
        self._blocks.append(("table", (None if header is None else list(header), [list(r) for r in rows]),
                             {"widths": widths_cm, "highlight": highlight}))
        return self

    def key_values(self, pairs: Iterable[tuple[str, Any]], *, header: Sequence[str] | None = ("item", "value"),
                   label_cm: float = 5.5, highlight: Sequence[bool | None] | None = None) -> "PdfReport":
        """A two-column table of labels and values, the labels `label_cm` wide; `header` None leaves out the header row."""
        widths = [5.5, 11.5] if self.legacy_tables else [label_cm, _TEXT_WIDTH_CM - label_cm]
        return self.table(header, [[k, v] for k, v in pairs], widths_cm=widths, highlight=highlight)

    def signature_lines(self, labels: Iterable[str]) -> "PdfReport":
        """A blank line to write on after each label (a reviewer's name, role, date, signature)."""
        self._blocks.append(("signature_lines", (list(labels),), {}))
        return self

    def image(self, png: bytes, *, width_cm: float = 16.0, caption: str | None = None) -> "PdfReport":
        self._blocks.append(("image", (png, width_cm, caption), {}))
        return self

    def page_break(self) -> "PdfReport":
        self._blocks.append(("page_break", (), {}))
        return self

    def build(self) -> bytes:
        """The PDF as bytes (reproducible: the same blocks give the same bytes)."""
        from reportlab.lib import colors
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
        from reportlab.lib.units import cm
        from reportlab.platypus import (
            Image,
            ListFlowable,
            ListItem,
            PageBreak,
            Paragraph,
            SimpleDocTemplate,
            Spacer,
            Table,
            TableStyle,
        )

        sheet = getSampleStyleSheet()
        styles = {
            "title": sheet["Title"],
            "h1": sheet["Heading2"],
            "h2": sheet["Heading3"],
            "body": ParagraphStyle("ct-body", parent=sheet["BodyText"], fontName=BODY_FONT, fontSize=9.5, leading=12.5),
            "small": ParagraphStyle("ct-small", parent=sheet["BodyText"], fontName=BODY_FONT, fontSize=7.5, leading=9.5),
            "mono": ParagraphStyle("ct-mono", parent=sheet["BodyText"], fontName=MONO_FONT, fontSize=7, leading=9,
                                   wordWrap="CJK"),
            "cell": ParagraphStyle("ct-cell", parent=sheet["BodyText"], fontName=BODY_FONT, fontSize=CELL_FONT_SIZE,
                                   leading=10, **({"wordWrap": "CJK"} if self.legacy_tables else {})),
            "head": ParagraphStyle("ct-head", parent=sheet["BodyText"], fontName=BOLD_FONT, fontSize=CELL_FONT_SIZE,
                                   leading=10),
        }
        # a heading never ends a page without the block it introduces
        keep = 0 if self.legacy_tables else 1
        styles["h1"] = ParagraphStyle("ct-h1", parent=styles["h1"], keepWithNext=keep)
        styles["h2"] = ParagraphStyle("ct-h2", parent=styles["h2"], keepWithNext=keep)
        styles["h3"] = ParagraphStyle("ct-h3", parent=sheet["Heading4"], keepWithNext=keep)
        width = A4[0] - 2 * PAGE_MARGIN_CM * cm
        story: list[Any] = [Paragraph(escape(self.title), styles["title"])]
        if self.subtitle:
            story.append(Paragraph(escape(self.subtitle), styles["body"]))
        story.append(Spacer(1, 0.3 * cm))
        for kind, args, options in self._blocks:
            if kind == "heading":
                text, level = args
                story.append(Paragraph(escape(text), styles["h1" if level <= 1 else "h2" if level == 2 else "h3"]))
            elif kind == "paragraph":
                text, style = args
                story.append(Paragraph(escape(text), styles[style]))
                story.append(Spacer(1, 0.15 * cm))
            elif kind == "bullets":
                (items,) = args
                story.append(ListFlowable(
                    [ListItem(Paragraph(escape(item), styles["body"]), leftIndent=12) for item in items],
                    bulletType="bullet", start="-", leftIndent=12,
                ))
            elif kind == "table":
                header, rows = args
                top = 0 if header is None else 1
                data = [] if header is None else [[Paragraph(escape(h), styles["head"]) for h in header]]
                data += [[Paragraph(escape(cell), styles["cell"]) for cell in row] for row in rows]
                if not data:
                    continue
                if options["widths"]:
                    widths = [w * cm for w in options["widths"]]
                elif self.legacy_tables:
                    widths = [width / max(len(header or []), 1)] * len(header or [])
                else:
                    widths = column_widths(header or [], rows, width)
                table = Table(data, colWidths=widths, repeatRows=top)
                commands: list[tuple] = [
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa5b1")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
                if top:
                    commands.insert(0, ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")))
                for i, mark in enumerate(options["highlight"] or []):
                    if mark is True:
                        commands.append(("BACKGROUND", (0, i + top), (-1, i + top), colors.HexColor("#e3f4e1")))
                    elif mark is False:
                        commands.append(("BACKGROUND", (0, i + top), (-1, i + top), colors.HexColor("#f8dcdc")))
                table.setStyle(TableStyle(commands))
                story.extend([table, Spacer(1, 0.3 * cm)])
            elif kind == "image":
                png, width_cm, caption = args
                image = Image(io.BytesIO(png))
                scale = min(width_cm * cm, width) / image.imageWidth
                image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
                story.append(image)
                if caption:
                    story.append(Paragraph(escape(caption), styles["small"]))
                story.append(Spacer(1, 0.3 * cm))
            elif kind == "signature_lines":
                (labels,) = args
                lines = Table([[Paragraph(escape(label), styles["body"]), ""] for label in labels],
                              colWidths=[4.0 * cm, width - 4.0 * cm], rowHeights=[0.9 * cm] * len(labels))
                lines.setStyle(TableStyle([
                    ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                    ("LINEBELOW", (1, 0), (1, -1), 0.5, colors.HexColor("#5f6b7a")),
                ]))
                story.extend([lines, Spacer(1, 0.3 * cm)])
            elif kind == "page_break":
                story.append(PageBreak())

        footer = self.footer

        def decorate(canvas: Any, doc: Any) -> None:
            canvas.saveState()
            canvas.setFont(BODY_FONT, 7)
            text = f"{footer}  -  page {doc.page}" if footer else f"page {doc.page}"
            canvas.drawString(PAGE_MARGIN_CM * cm, 1.0 * cm, text.encode("latin-1", "replace").decode("latin-1"))
            canvas.restoreState()

        buffer = io.BytesIO()
        document = SimpleDocTemplate(
            buffer,
            pagesize=A4,
            leftMargin=PAGE_MARGIN_CM * cm,
            rightMargin=PAGE_MARGIN_CM * cm,
            topMargin=PAGE_MARGIN_CM * cm,
            bottomMargin=PAGE_MARGIN_CM * cm,
            title=_plain(self.title),
            author=_plain(self.author),
            subject=_plain(self.subtitle or ""),
            invariant=1,
        )
        document.build(story, onFirstPage=decorate, onLaterPages=decorate)
        return buffer.getvalue()


def column_widths(header: Sequence[Any], rows: Sequence[Sequence[Any]], available: float) -> list[float]:
    """Column widths in points that fill `available`, sized from the cells' text (HTML's automatic table layout).

    Each column gets at least its longest word (header words in bold). A word
    of more than `SPLITTABLE_CHARACTERS` characters (a SHA-256, a run id) may
    be split, so it asks for at most `LONG_WORD_SHARE` of the page, and gives
    way first when the page is too narrow for every column's longest word.
    What is left goes to the columns in proportion to how much wider their
    longest cell would like to be, and once every cell fits on one line, in
    proportion to those natural widths.
    """
    from reportlab.pdfbase.pdfmetrics import stringWidth

    columns = max(len(header), max((len(r) for r in rows), default=0))
    if columns == 0:
        return []
    cap = available * LONG_WORD_SHARE
    rigid = [0.0] * columns  # the longest word that must not be split
    least = [0.0] * columns  # ... or that may, up to the cap
    natural = [0.0] * columns
    for font, line in [(BOLD_FONT, list(header))] + [(BODY_FONT, list(r)) for r in rows]:
        for j, cell in enumerate(line):
            text = _plain((cell if isinstance(cell, str) else fmt(cell)).replace("\n", " "))
            for word in text.split():
                size = stringWidth(word, font, CELL_FONT_SIZE)
                least[j] = max(least[j], min(cap, size))
                if len(word) <= SPLITTABLE_CHARACTERS:
                    rigid[j] = max(rigid[j], min(cap, size))
            natural[j] = max(natural[j], min(available, stringWidth(text, font, CELL_FONT_SIZE)))
    pad = CELL_PADDING_PT + 1
    rigid, least = [w + pad for w in rigid], [w + pad for w in least]
    natural = [max(n + pad, m) for n, m in zip(natural, least)]
    if sum(least) > available:
        if sum(rigid) >= available:
            return [w * available / sum(rigid) for w in rigid]
        give = [m - r for m, r in zip(least, rigid)]
        room = available - sum(rigid)
        return [r + room * g / sum(give) for r, g in zip(rigid, give)]
    spare = available - sum(least)
    wants = [n - m for n, m in zip(natural, least)]
    if sum(wants) > spare:
        return [m + spare * w / sum(wants) for m, w in zip(least, wants)]
    return [n * available / sum(natural) for n in natural]


def _plain(text: str) -> str:
    """Document-info text: printable Latin-1 only (it is not markup, but it must encode)."""
    return "".join(ch if " " <= ch and ord(ch) < 256 else "?" for ch in text)


def pdf_text(pdf: bytes) -> str:
    """The text of a PDF, page after page (pypdf), for tests and `credittwin verify`."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() or "" for page in reader.pages)
