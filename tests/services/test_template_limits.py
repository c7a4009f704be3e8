"""Template resource limits (issue 17): hostile templates are refused before they allocate.

Before: ``POST /api/v1/mailings`` with ``html: "{{ 'a' * 1000000000 }}"`` returned 201 and the
server reached 4.1 GB.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from sqlalchemy import Engine, func, select

from mailcarrier.services.composition import MailingRenderer, RecipientData, TemplateRenderError
from mailcarrier.services.mailings import MailingDraft, create_mailing
from mailcarrier.services.template_sandbox import BoundedSandbox, TemplateLimitError, TemplateLimits
from mailcarrier.storage.tables import mailings
from tests.delivery.world import T0, World, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

HOSTILE = [
    "{{ 'a' * 1000000000 }}",
    "{{ 1000000000 * 'a' }}",
    "{{ [1, 2, 3] * 1000000000 }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ '1'.zfill(1000000000) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=1000000000) }}",
    "{{ '%1000000000s' % 'x' }}",
    "{{ '%*s' % (1000000000, 'x') }}",
    "{{ '%1000000000s'|format('x') }}",
    "{{ ('a' * 100000)|replace('a', 'b' * 100000) }}",
    "{{ ('a' * 100000).replace('a', 'b' * 100000) }}",
    "{{ ('x\\n' * 100000)|indent(100000) }}",
    "{{ ('\\t' * 100000).expandtabs(100000) }}",
    "{{ [1]|batch(1000000000, 0)|list }}",
    "{{ [1]|slice(1000000000)|list }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(x=2) %}{% for i in range(100) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ d('ab', 40) }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "{{ range(100000)|join(',' * 1000000) }}",
    "{{ (',' * 1000000).join(range(10000)|map('string')) }}",
    "{{ ([('a' * 1000000)] * 100)|join }}",
    "{{ ([('a' * 1000000)] * 100)|string }}",
    "{{ [[('a' * 1000000)]] * 100 }}",
    "{% set ns = namespace(l=['a' * 1000000]) %}{% for i in range(10) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in 'x' * 100000 %}{{ '' }}{% endfor %}{% endfor %}",
]


@pytest.fixture
def world(empty_engine: Engine) -> World:  # noqa: F811
    return make_world(empty_engine, ["a@example.com"])


def _draft(world: World, html: str) -> MailingDraft:
    return MailingDraft(account_id=world.account_id, from_address="news@shop.example", subject="Hi",
                        html=html, text="Hello", audience_id=world.audience_id)


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_templates_are_refused_quickly_without_allocating(source: str) -> None:
    env = BoundedSandbox(TemplateLimits(max_seconds=1.0))
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(TemplateLimitError):
            env.from_string(source).render()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 3
    assert peak < 60_000_000, f"peak {peak / 1e6:.0f} MB"


def test_the_issue_template_is_refused_at_creation_with_a_clear_problem(world: World) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateRenderError, match="1,000,000,000 characters"):
            create_mailing(world.engine, _draft(world, "{{ 'a' * 1000000000 }}"), T0)
        assert tracemalloc.get_traced_memory()[1] < 60_000_000
    finally:
        tracemalloc.stop()
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(mailings)).scalar_one() == 0


def test_ordinary_templates_still_render(world: World) -> None:
    source = ("<p>{{ first_name|default('friend', true)|title }} {{ 'x'|center(9) }} {{ '%05d' % 42 }} "
              "{{ '{:>6}'.format('ok') }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ [1] + [2] }} "
              "{% for i in range(3) %}{{ i }}{% endfor %} {{ 'a' ~ 'b' }} {{ 'a-b'|replace('-', '+') }} "
              "{{ [1, 2]|join('-') }} {{ ','.join(['x', 'y']) }}</p>")
    mailing_id = create_mailing(world.engine, _draft(world, source), T0)
    with world.engine.connect() as conn:
        row = conn.execute(select(mailings).where(mailings.c.id == mailing_id)).one()
    renderer = MailingRenderer(row, secret=b"s" * 32, bounce_domain="b.example", public_url="http://x")
    bodies = renderer.personalise(RecipientData(1, 1, "a@example.com", "ann", "", {}))
    assert bodies.html == ("<p>Ann     x     00042     ok 1024 ababab [1, 2] 012 ab a+b 1-2 x,y</p>")


def test_contact_data_that_blows_a_limit_fails_that_delivery_alone(world: World) -> None:
    """The same limits hold at send time, when the size comes from a contact's fields."""
    mailing_id = create_mailing(world.engine, _draft(world, "{{ 'a' * (fields.n|int(1)) }}"), T0)
    with world.engine.connect() as conn:
        row = conn.execute(select(mailings).where(mailings.c.id == mailing_id)).one()
    renderer = MailingRenderer(row, secret=b"s" * 32, bounce_domain="b.example", public_url="http://x")
    assert renderer.personalise(RecipientData(1, 1, "a@example.com", "", "", {"n": "3"})).html == "aaa"
    with pytest.raises(TemplateRenderError, match="characters"):
        renderer.personalise(RecipientData(2, 1, "b@example.com", "", "", {"n": "1000000000"}))
