"""How q2rec's processes start or join Ray: a safe environment and token auth on small machines and closed networks."""
