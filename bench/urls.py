"""The product's URLconf with the bench-only baseline endpoint in front of it."""

from django.urls import path

from awaithuman.urls import handler404, handler500
from awaithuman.urls import urlpatterns as product_urlpatterns

from .views import bare_insert

__all__ = ["handler404", "handler500", "urlpatterns"]

urlpatterns = [path("bench/insert", bare_insert), *product_urlpatterns]
