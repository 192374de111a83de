"""cavelab's HTTP layer: tornado handlers that translate CAVE's REST API to engine calls.

Modules: ``routes`` (the route table, ``setup_handlers``), ``base`` (the base handler: auth,
parsing, replies), ``errors`` (the one exception -> HTTP mapping), ``host`` (the engine and its
thread pool), ``params`` (wire-value parsing), ``documents`` (datastack / graphene info),
``versions``, ``info``, ``segmentation`` (reads), ``edits``, ``history`` and ``status``.
"""
