"""Console pages of notifications (my contact points) and the e-mail action links (``/n/``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "notifications"

urlpatterns = [
    path("n/a/<str:token>", views.action, name="action"),
    path("contact-points/", views.contact_points, name="contact_points"),
    path("contact-points/add", views.contact_point_add, name="contact_point_add"),
    path("contact-points/add-push", views.contact_point_add_push, name="contact_point_add_push"),
    path("contact-points/quiet-hours", views.quiet_hours, name="quiet_hours"),
    path("contact-points/all-points-for", views.all_points_for, name="all_points_for"),
    path(
        "contact-points/<str:public_id>/send-code",
        views.contact_point_send_code,
        name="contact_point_send_code",
    ),
    path(
        "contact-points/<str:public_id>/verify",
        views.contact_point_verify,
        name="contact_point_verify",
    ),
    path(
        "contact-points/<str:public_id>/test", views.contact_point_test, name="contact_point_test"
    ),
    path(
        "contact-points/<str:public_id>/move", views.contact_point_move, name="contact_point_move"
    ),
    path(
        "contact-points/<str:public_id>/priorities",
        views.contact_point_priorities,
        name="contact_point_priorities",
    ),
    path(
        "contact-points/<str:public_id>/remove",
        views.contact_point_remove,
        name="contact_point_remove",
    ),
]
