"""VRRP failover benchmark: lvs-agent against keepalived 2.2 in the same lab (run.py)."""
