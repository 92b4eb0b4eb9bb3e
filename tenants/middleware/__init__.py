"""The tenants app's middleware, one module per concern, in the order ``MIDDLEWARE`` runs them:

* ``organization``: ``request.organization`` and ``request.membership`` for console requests;
* ``two_factor``: the second factor, owed before any page (and the same rule for websockets);
* ``plan_limits``: a plan limit reached by a console view, as a 402 page with an upgrade button.
"""
