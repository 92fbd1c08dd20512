"""The replay page and the recordings list a browser opens from a signed link: plain HTML, CSS and
JavaScript shipped in this package (`static/`), served by `routes.py` under `/view`."""
