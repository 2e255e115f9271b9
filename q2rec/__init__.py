"""q2rec's command line: the ``q2rec`` command (``cli``) and the pipeline it runs end to end (``pipeline``)."""
