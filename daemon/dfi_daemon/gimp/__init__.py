"""GIMP on this machine: where each GIMP 3 and its profile are (``found``), and putting the plug-in there
(``install`` with ``targets``, ``config``, ``files``, ``deps``, ``keys``). Standard library only, so
``dfi gimp`` and ``dfi doctor`` start fast and work from an installed wheel."""
