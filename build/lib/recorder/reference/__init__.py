"""Reference media and page: what calibration, the benchmark and the tests record."""
