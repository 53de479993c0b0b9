"""The YAML configs shipped with SpotWhisper, installed as the package ``spotwhisper.configs``.

In the repository this folder is ``configs/``, mapped into the package by ``pyproject.toml``
(``[tool.setuptools.package-dir]``; an editable install finds it there); in an installed wheel it is
``site-packages/spotwhisper/configs``. Code reads these files only through
:func:`spotwhisper.config.resolve_config_path`, which lets a file of the same name in
``--config-dir`` / ``$SPOTWHISPER_CONFIG_DIR`` win over the shipped one.
"""
