"""The template sandbox: event data is text, and a template cannot reach into Python.

Data from events is never compiled as a template, so `{{ 7*7 }}` in a field is printed as is; in
HTML it is escaped too. A template file that tries to climb out (`__class__`, `__globals__`, a
mutating method) meets Jinja's immutable sandbox, and that `SecurityError` reaches the sender
as a `TemplateError`: one failed, dead-lettered action, never code run or a crashed sender.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from schemas import PolkuError
from streams.senders import Contact, PermanentDeliveryError, TemplateError, TemplateRenderer
from streams.senders._templates import _environment
from tests.streams.channels.builders import make_action

ECHO = (
    "{% block subject %}About {{ params.note }}{% endblock %}"
    "{% block text %}Note: {{ params.note }} from {{ first_name }}{% endblock %}"
    "{% block html %}<p>Note: {{ params.note }} from {{ first_name }}</p>{% endblock %}"
)


def _renderer(tmp_path: Path, **templates: str) -> TemplateRenderer:
    (tmp_path / "email").mkdir(exist_ok=True)
    for name, source in templates.items():
        (tmp_path / "email" / f"{name}.j2").write_text(source)
    return TemplateRenderer(tmp_path)


@pytest.mark.parametrize(
    ("note", "in_html"),
    [
        ("{{ 7*7 }}", "{{ 7*7 }}"),
        ("{% for x in range(3) %}x{% endfor %}", "{% for x in range(3) %}x{% endfor %}"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("{{ ''.__class__.__mro__ }}", "{{ &#39;&#39;.__class__.__mro__ }}"),
    ],
)
def test_event_data_is_literal_text(tmp_path: Path, note: str, in_html: str) -> None:
    renderer = _renderer(tmp_path, echo=ECHO)
    action = make_action(template="echo", params={"note": note})

    message = renderer.render(action, Contact(first_name="{{ 6*7 }}<b>"))

    assert message["subject"] == f"About {note}"
    assert message["text"] == f"Note: {note} from {{{{ 6*7 }}}}<b>\n"
    assert f"<p>Note: {in_html} from {{{{ 6*7 }}}}&lt;b&gt;</p>" in message["html"]
    for part in message.parts.values():
        assert "49" not in part
        assert "42" not in part


@pytest.mark.parametrize(
    ("expression", "refused"),
    [
        ("''.__class__.__mro__", "'__class__' of 'str'"),
        ("params.__class__.__subclasses__()", "'__class__' of 'dict'"),
        ("action.__init__.__globals__", "'__init__' of 'Action'"),
        ("lipsum.__globals__['os']", "'__globals__' of 'function'"),
        ("cycler.__init__.__globals__", "'__init__' of 'type'"),
        ("params|attr('__class__')", "'__class__' of 'dict'"),
        ("'{0.__class__}'.format(params)", "'__class__' of 'dict'"),
        ("self._TemplateReference__context", "'_TemplateReference__context'"),
        ("params.clear()", "'clear' of 'dict'"),
        ("params.update(cart_id='stolen')", "'update' of 'dict'"),
        ("items.append(1)", "'append' of 'list'"),
    ],
)
def test_a_template_cannot_reach_into_python(tmp_path: Path, expression: str, refused: str) -> None:
    renderer = _renderer(
        tmp_path, escape=f"{{% block subject %}}{{{{ {expression} }}}}{{% endblock %}}"
    )
    params = {"cart_id": "c-1", "items": [{"name": "Trail shoe"}]}
    action = make_action(template="escape", params=params)

    with pytest.raises(TemplateError) as raised:
        renderer.render(action, Contact())

    error = raised.value
    assert isinstance(error, PermanentDeliveryError)
    assert isinstance(error, PolkuError)
    assert error.kind == "template_error"
    assert error.status == "failed"  # dead-lettered with its reason, never retried
    assert f"access to attribute {refused}" in error.detail
    assert "is unsafe" in error.detail
    assert "email/escape.j2, block 'subject'" in error.detail
    assert action.params == params  # nothing was changed on the way


@pytest.mark.parametrize("autoescape", [True, False])
def test_both_environments_are_immutable_sandboxes(tmp_path: Path, autoescape: bool) -> None:
    environment = _environment(tmp_path, autoescape=autoescape)
    assert isinstance(environment, ImmutableSandboxedEnvironment)
    assert environment.autoescape is autoescape
    assert environment.undefined is jinja2.StrictUndefined
    with pytest.raises(SecurityError):
        environment.from_string("{{ ''.__class__.__mro__ }}").render()
    with pytest.raises(SecurityError):
        environment.from_string("{{ data.pop() }}").render(data=[1])


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("range(10**9)|list|length", "OverflowError: Range too big"),
        ("1 / 0", "ZeroDivisionError"),
        ("1 + 'a'", "TypeError"),
        ("'%d' % 'x'", "TypeError"),
    ],
)
def test_python_errors_in_a_template_fail_the_action_not_the_sender(
    tmp_path: Path, expression: str, reason: str
) -> None:
    error = _render_failure(tmp_path, expression, params={})

    assert error.kind == "template_error"
    assert reason in error.detail


def _render_failure(tmp_path: Path, expression: str, params: dict[str, object]) -> TemplateError:
    """The error of rendering `expression` as an email subject."""
    renderer = _renderer(
        tmp_path, boom=f"{{% block subject %}}{{{{ {expression} }}}}{{% endblock %}}"
    )
    with pytest.raises(TemplateError) as raised:
        renderer.render(make_action(template="boom", params=params), Contact())
    return raised.value


@pytest.mark.parametrize(
    ("expression", "refused"),
    [
        ("'*' * params.rating", "'*' would build 1,000,000,000 items"),
        ("params.rating * 'ab'", "'*' would build 2,000,000,000 items"),
        ("[0] * params.rating", "'*' would build 1,000,000,000 items"),
        ("2 ** params.rating", "'**' result too large"),
        ("params.rating ** 1000", "'**' result too large"),
    ],
)
def test_event_data_cannot_make_a_template_build_something_huge(
    tmp_path: Path, expression: str, refused: str
) -> None:
    error = _render_failure(tmp_path, expression, params={"rating": 10**9})

    assert error.kind == "template_error"
    assert refused in error.detail


@pytest.mark.parametrize(
    ("expression", "rendered"),
    [
        ("'★' * params.rating", "★★★★★"),
        ("params.rating * 2", "10"),
        ("params.rating ** 2", "25"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("(-1) ** 3", "-1"),
        ("'-' * 0", ""),
    ],
)
def test_ordinary_arithmetic_still_renders(tmp_path: Path, expression: str, rendered: str) -> None:
    blocks = "".join(
        f"{{% block {name} %}}[{{{{ {expression} }}}}]{{% endblock %}}"
        for name in ("subject", "text", "html")
    )
    renderer = _renderer(tmp_path, stars=blocks)

    message = renderer.render(make_action(template="stars", params={"rating": 5}), Contact())

    assert message["subject"] == f"[{rendered}]"


def test_error_details_keep_personal_data_out(tmp_path: Path) -> None:
    renderer = _renderer(
        tmp_path, leak="{% block subject %}{{ params[params.email] }}{% endblock %}"
    )
    action = make_action(template="leak", params={"email": "aino@example.com"})

    with pytest.raises(TemplateError) as raised:
        renderer.render(action, Contact())

    assert "aino@example.com" not in raised.value.detail
    assert "<email>" in raised.value.detail
