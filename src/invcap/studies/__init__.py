"""One module per notebook: what each notebook of ``notebooks/`` runs, shows and checks.

The library (``invcap.inn``, ``invcap.data``, ``invcap.captioning``, ...) holds the pieces anyone
would reuse and never imports from here (``tests/test_layers.py`` checks that). A study module
holds, for its notebook:

- ``Params``: the notebook's parameters as a dataclass, defaults equal to the parameters cell
  (``Params.from_notebook(globals())`` builds it from the cell, with papermill's overrides);
- the step functions the notebook calls, each returning plain results;
- ``RESULTS``: the results file(s) it writes under ``results_dir()``, with their schema;
- its figures (``plot_*``, shown inline and saved with ``common.show``);
- ``verdicts(...)``: the text its ``# NBVAL_CHECK_OUTPUT`` cells print, robust to machine
  differences (bands and verdicts, never the last digit of a trained quantity);
- ``README_BLOCKS``: name -> renderer(results folder) -> Markdown, for ``invcap.studies.readme``.

Notebook ``NN_name.ipynb`` runs ``invcap.studies.nbNN_name``. Studies that run after the
notebooks (``make paper``) are modules here too.
"""
