"""The Discord adapter (discord.py): commands, reply-to-edit, buttons, and a Presenter.

Imported only by absolute name (``adapters.discord``): inside this package ``import discord`` is
the discord.py library, so no module here may be called ``discord``.
"""
