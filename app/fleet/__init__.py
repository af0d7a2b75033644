"""The backbone on a fleet of `vllm serve` replicas: routing, adapter placement, failover.

``engine.RemoteEngine`` is the ``Engine`` over the fleet; ``policy`` the routing policies (pure,
shared with the simulator in ``bench/fleet_sim.py``); ``replica`` one replica's state; ``wire``
the mapping onto vLLM's completion fields; ``launcher`` starts a local fleet (``tailor fleet``).
"""
