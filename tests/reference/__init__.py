"""The core as it stood before issue 15 ("Core at stream speed"), frozen as the reference.

``engine.py``, ``state.py`` and ``population.py`` are copies of ``segstream.core``'s modules at
commit a7e6387 (re-frozen there, once issues 12, 14 and 16 had landed: groups, shadow rule
sets, timelines, hysteresis), changed only to import each other. The production core is
being rewritten for speed (running window aggregates, fewer evaluations);
``tests/unit/test_reference_equality.py`` runs random streams through both and asserts that
every change (all fields, in order), every stored state (``dump_state`` bytes) and every lane
record are the same.

Do not "fix" these files: they define today's behaviour. A deliberate change of semantics in
the production core is made here too, in the same commit, and says so. Made so far: late
orders, corrections and closed tickets judged by their own topic's clock instead of the
partition's clock over all topics (2026-12-02; state must not depend on how the topics
interleave, ``tests/unit/test_interleaving.py``); event ids remembered and forgotten by their
own topic's clock, with the kind of event stored beside each id's day (state format 4,
2026-12-02, for the same reason: an exact re-delivery was caught or not by the other topics).

What they still share with production: the event contracts and their parser, the rule
compiler (including the ``Windows`` the rules carry), groups, partitioning and time helpers.

Not to be confused with ``tests/unit/reference.py``: a plain recomputation of a customer's
values and the default rules' segments from its whole event list, an oracle for the property
tests; this package is the previous implementation, change for change.
"""
