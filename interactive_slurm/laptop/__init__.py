"""The laptop side: setup, the managed ssh config block, VS Code settings, the cluster install.

The only place asyncssh is imported.
"""
