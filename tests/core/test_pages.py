"""register.page: plugins' web pages outside /api (the route table's rules; the pages themselves
are served by a real rportd in tests/plugins/test_dashboard.py)."""

from __future__ import annotations

import pytest
from rport.core.api.routing import RouteTable
from starlette.responses import PlainTextResponse


async def page(request):  # type: ignore[no-untyped-def]
    return PlainTextResponse("page")


@pytest.mark.parametrize("path", ["/api", "/api/v1/x", "/api/"])
def test_pages_under_api_are_refused(path: str) -> None:
    register = RouteTable().registrar("web")
    with pytest.raises(ValueError, match="is under /api"):
        register.page(path, page)


def test_page_rules() -> None:
    table = RouteTable()
    register = table.registrar("web")
    register.page("/", page, name="index")
    register.page("/apiary", page)  # only /api and below belong to the API
    with pytest.raises(ValueError, match="must start with /"):
        register.page("relative", page, name="other")
    with pytest.raises(ValueError, match="page / registered by both 'web' and 'other'"):
        table.registrar("other").page("/", page)
    with pytest.raises(ValueError, match="route name 'web:index' registered twice"):
        register.page("/x", page, name="index")
    register("/status", page, name="status")
    with pytest.raises(ValueError, match="route name 'web:status' registered twice"):
        register.page("/status", page, name="status")
    with pytest.raises(ValueError, match="route name 'web:index' registered twice"):
        register("/index", page, name="index")
    assert [(p.path, p.name, p.methods) for p in table.pages] == [
        ("/", "web:index", ("GET",)), ("/apiary", "web:page", ("GET",))]
    assert [r.path for r in table.starlette_pages()] == ["/", "/apiary"]
