"""Files shipped with the package for the host it is installed on, not imported code.

``systemd/lvs-agent.service`` runs ``lvs-agent run`` and ``systemd/lvs-agent-witness.service``
runs ``lvs-agent witness``, both as the ``lvs-agent`` system user with only the
capabilities they need. Their ``ExecStart`` names ``lvs-agent`` without a path: systemd
finds it in /usr/local/bin or /usr/bin (a venv's ``bin/lvs-agent`` is linked there).
The Ansible role copies them from the installed package to /etc/systemd/system.
"""
