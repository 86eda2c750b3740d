"""Markdown metadata built from upload-derived text stays text."""

from assets.common import markdown_list, markdown_table, md_text


def test_upload_text_cannot_become_a_link_an_image_or_html_in_the_ui():
    hostile = "![x](http://evil.example/t.png) <img src=x onerror=alert(1)> [click](javascript:alert(1))"
    text = md_text(hostile)
    assert "![" not in text and "](" not in text and "<img" not in text
    assert text.replace("\\", "").replace("&lt;", "<").replace("&gt;", ">") == hostile


def test_tables_and_lists_escape_every_cell_and_keep_rows_on_one_line():
    table = markdown_table(["segment", "loss"], [["a|b\nc", 0.123456], [None, 3]]).value
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2] == "| a\\|b c | 0.1235 |" and lines[3] == "| - | 3 |"
    assert markdown_list([]).value == "none"
    assert markdown_list(["*bold*"]).value == "- \\*bold\\*"
