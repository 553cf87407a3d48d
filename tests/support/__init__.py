"""What the tests share: real agents and labs to run them against (agent_harness, pings,
tshark_lab, dataplane_lab), the kernel's counters of a namespace (kernel_counters), a
strongSwan peer (charon, with ike_driver as our side), and in-memory pairs on fake time
(ike_peers, engine_pair, dataplane_pair). Imported as
``tests.support.X``; the benchmarks use the lab helpers too.
"""
