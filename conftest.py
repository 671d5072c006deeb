"""pytest configuration shared by tests/ and the nbval run over notebooks/."""


def pytest_collectstart(collector):
    # Progress bars and library warnings go to stderr and differ run to run; nbval compares
    # only the outputs of cells marked NBVAL_CHECK_OUTPUT, and never their stderr.
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
