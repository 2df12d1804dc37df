"""proxy: an HTTPS reverse proxy with a real certificate in front of a tunnel (``http_proxy=1``)."""
