"""Acting on a run's verdicts: the changes a run proposes (:mod:`job.apply.proposals`), written as
``corrections.csv`` (:mod:`job.apply.table`); and ``faceatlas apply``, which carries out the ones a person
accepted on a copy of a file database (:mod:`job.apply.requests` reads them, :mod:`job.apply.copies` writes
each format, :mod:`job.apply.applying` ties them together). A database is never written: its own tools apply
the same file (docs/corrections.md)."""
