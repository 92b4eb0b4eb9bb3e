"""Finding one of an organization's objects by the public id in a URL."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from .ids import is_public_id
from .models import Organization

ModelT = TypeVar("ModelT", bound=Model)


def get_for_organization_or_404(
    queryset_or_model: QuerySet[ModelT] | type[ModelT],
    organization: Organization,
    public_id: str,
    *,
    prefix: str,
) -> ModelT:
    """The object with this ``prefix`` public id among ``organization``'s, else ``Http404``.

    Another organization's object, a missing one and a malformed id all look the same (a 404
    that says nothing about which), and a malformed id never reaches the database. The filter is
    on ``organization_id`` so it serves foreign keys and ``audit``'s plain organization ids alike;
    a queryset passed in keeps its ``select_related`` and its own narrowing.
    """
    if not is_public_id(public_id, prefix):
        raise Http404
    return get_object_or_404(
        queryset_or_model, organization_id=organization.pk, public_id=public_id
    )
