"""Many hosts: an inventory in a real database and the answers over it.

``inputs`` turns capture documents and libvirt domcapabilities into host records
(pure), ``store`` keeps them (SQLAlchemy, Alembic migrations), ``view`` loads a
cluster into memory, ``matrix`` packs feature sets into numpy words, and the answer
modules (``baseline``, ``placement``, ``whatif``, ``levels``) work on a view.
``api`` is what the CLI and the HTTP service call.
"""
