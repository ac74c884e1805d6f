"""`edgeferry-agent`: pull mode, run inside an edge site, talking to the hub API only, outbound.

Its own room beside `handlers` (no Kopf: the agent watches nothing on the hub it may not list,
and a plain loop over its few releases is all it needs); it uses the same adapters to apply and
observe at the site that the operator uses in push mode, and the same pure decisions.
"""
