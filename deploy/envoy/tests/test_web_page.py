"""The upload page offers the levels the service defines, no hand-written list."""

import re

from deploy.envoy.render import WEB_PAGE_PATH, web_page
from libs.compression import DEFAULT_LEVEL, LEVEL_NAMES


def test_the_page_offers_every_defined_level_in_order_with_the_default_checked() -> None:
    page = web_page()
    radios = re.findall(r'<input type="radio" name="level" value="([a-z]+)"( checked)?>', page)
    assert [value for value, _ in radios] == list(LEVEL_NAMES)
    assert [value for value, checked in radios if checked] == [DEFAULT_LEVEL]
    assert "LEVEL_CHOICES" not in page


def test_the_template_names_no_level_itself() -> None:
    template = WEB_PAGE_PATH.read_text()
    assert 'name="level" value=' not in template
