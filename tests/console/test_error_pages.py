"""Error pages as a person meets them: in the console's layout, saying what happened, with a
way back; the API keeps answering problem+json."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.test import Client, RequestFactory

from awaithuman.problems import server_error_view
from tests.console.helpers import verified

pytestmark = pytest.mark.django_db


def test_a_missing_page_is_a_styled_404_with_the_console_around_it(acme):
    response = verified(acme.members["bob"].user).get("/escalations/esc_AAAAAAAAAAAAAAAAAAAA/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "There is nothing at this address" in page
    assert 'href="/">Back to the queue</a>' in page
    assert 'aria-label="Console"' in page  # the navigation is there
    assert "Sign out" in page


def test_a_visitor_who_is_not_signed_in_is_offered_to_sign_in_from_a_404():
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert 'href="/account/login/">Sign in</a>' in response.content.decode()


def test_a_role_that_may_not_is_told_so_on_a_styled_403(acme):
    target = acme.members["bob"].public_id
    response = verified(acme.members["vera"].user).post(f"/org/members/{target}/role/")
    page = response.content.decode()
    assert response.status_code == 403
    assert "You are viewer in Acme" in page
    assert "Back to the queue" in page


def test_django_admin_shows_the_same_404(acme):
    response = verified(acme.members["alice"].user).get("/admin/no-such-app/")
    assert response.status_code == 404
    assert "There is nothing at this address" in response.content.decode()


def test_a_server_error_has_a_page_and_a_way_back():
    response = server_error_view(RequestFactory().get("/"))
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in page
    assert 'href="/">Back to the queue</a>' in page


def test_the_api_still_answers_problem_json_for_a_missing_address():
    response = Client().get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_console_pages_and_admin_name_a_favicon_that_exists(acme):
    client = verified(acme.members["alice"].user)
    pages = [client.get("/"), client.get("/admin/"), Client().get("/account/login/")]
    for page in pages:
        assert 'rel="icon" href="/static/console/favicon.svg"' in page.content.decode()
    assert finders.find("console/favicon.svg")
