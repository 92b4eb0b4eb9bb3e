"""Finding one of an organization's objects by the public id in a URL."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet

from .ids import get_by_public_id_or_404
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
    queryset = (
        queryset_or_model
        if isinstance(queryset_or_model, QuerySet)
        else queryset_or_model._default_manager.all()
    )
    return get_by_public_id_or_404(
        queryset.filter(organization_id=organization.pk), prefix, public_id
    )
