"""Billing over the Parquet history: settlement views and ``gridflex billing``.

:func:`gridflex.billing.views.register` adds the views ``settlements``, ``sessions``,
``response_energy`` and ``reconciliation`` (and their building blocks ``billing_segments``
and ``billing_pieces``) to a connection of :func:`gridflex.history.connect`, which calls it.
"""
