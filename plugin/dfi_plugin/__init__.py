"""The GIMP 3 plug-in's files, shipped as package data: ``gimp-dfi.py`` (the GIMP side), ``dfi_bridge.py``
(requests and settings, no GIMP) and ``dfi_preview.py`` (the preview window).

They run inside GIMP's own Python, copied flat into ``plug-ins/gimp-dfi/`` beside the wire package by
``dfi gimp install`` (:mod:`dfi_daemon.gimp.install`); nothing imports them from this package."""
